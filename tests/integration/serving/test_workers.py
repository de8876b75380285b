"""Several serving processes on one port (`serving.workers`, ADR 0093): every process answers
with the real model, and when one dies the others keep answering while the supervisor
replaces it."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from streamrec.infra.processes import free_port
from streamrec.infra.settings import Settings
from streamrec.serving.process import ServeProcess
from tests.integration.serving.conftest import USERS_WITH_FEATURES
from tests.kafka_helpers import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def workers_of(pid: int) -> set[int]:
    """The serving processes under the supervisor (`streamrec serve` children)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"-m streamrec serve" in cmdline:
            out.add(int(entry.name))
    return out


def test_two_workers_share_the_port_and_survive_one_dying(serving_stack: Settings):
    settings = serving_stack.with_overrides(
        serving={
            "workers": 2,
            "port": free_port(),
            "request_budget_ms": 5000,
            "dependency_cap_ms": 2000,
        },
        analytics={"metrics_port": 0},
    )
    server = ServeProcess(settings, "--no-topic").start()
    try:
        wait_for(lambda: len(workers_of(server.proc.pid)) == 2, 120, "two worker processes")

        def ask_all() -> list[str]:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                answers = [
                    client.get(f"/v1/users/{u}/recommendations", params={"k": 5})
                    for u in USERS_WITH_FEATURES[:20]
                ]
            assert [a.status_code for a in answers] == [200] * 20
            return [a.json()["level"] for a in answers]

        assert set(ask_all()) == {"FULL"}
        first, second = sorted(workers_of(server.proc.pid))
        os.kill(first, signal.SIGKILL)
        # Gone from /proc, reaped by the supervisor: its cmdline empties as soon as its memory
        # is released, while its threads still hold the listening socket, and a connection
        # the kernel queues there in that moment is reset when the socket closes.
        wait_for(lambda: not Path(f"/proc/{first}").exists(), 30, "the worker to be gone")
        assert set(ask_all()) == {"FULL"}  # the other one answers meanwhile
        wait_for(
            lambda: len(workers_of(server.proc.pid) - {second}) == 1, 180, "a replacement worker"
        )
        wait_for(
            lambda: httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200,
            60,
            "readiness after the replacement",
        )
        assert set(ask_all()) == {"FULL"}
    finally:
        server.stop()
    assert server.proc.poll() is not None
    assert not workers_of(server.proc.pid)
