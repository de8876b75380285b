"""`streamrec dashboard` in real headless chromium: the whole stack is drawn, a processor
that dies turns red, and one stopped cleanly turns grey "stopped"."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from html.parser import HTMLParser

import httpx
import pytest

from streamrec.analytics.dashboard.topology import EDGES, NODES
from streamrec.infra import processes
from streamrec.infra.processes import free_port
from streamrec.streams.worker_process import WorkerProcess
from tests.integration.analytics import browser
from tests.kafka_helpers import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORKER = "interaction-counter"
RED = "#e5484d"


class _Map(HTMLParser):
    """Node and edge elements of the page's SVG: data-* attributes, and each node's fill."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: dict[str, dict[str, str]] = {}
        self.edges: list[dict[str, str]] = []
        self._current: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "g" and "node" in a.get("class", ""):
            self._current = a["data-id"]
            self.nodes[self._current] = a
        elif tag == "rect" and self._current:
            self.nodes[self._current]["fill"] = a.get("fill", "")
            self._current = None
        elif tag == "path" and a.get("class") == "edge":
            self.edges.append(a)


def _parse(html: str) -> _Map:
    page = _Map()
    page.feed(html)
    return page


@pytest.fixture
def dashboard(isolated_stack, tmp_path):
    settings = isolated_stack.with_overrides(
        analytics={"dashboard_interval_s": 0.5, "heartbeat_interval_s": 0.5, "heartbeat_ttl_s": 2}
    )
    port = free_port()
    log = open(tmp_path / "dashboard.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamrec", "dashboard", "--port", str(port)],
        env={**os.environ, **settings.to_env()},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/api/state", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 60, "the dashboard to answer", interval=0.5)
        yield settings, url
    finally:
        processes.stop(proc.pid, tmp_path / "none.pid", timeout_s=10)
        proc.wait()
        log.close()


def _node(url: str, node_id: str) -> dict:
    state = httpx.get(f"{url}/api/state", timeout=5).json()
    return next(n for n in state["nodes"] if n["id"] == node_id)


def test_page_draws_the_stack_and_a_dead_processor_turns_red(dashboard, tmp_path):
    settings, url = dashboard
    worker = WorkerProcess(settings, WORKER).start()
    try:
        wait_for(lambda: _node(url, f"worker:{WORKER}")["status"] == "ok", 90, f"{WORKER} ok")
        page = _parse(browser.dump_dom(url + "/"))
        assert set(page.nodes) == {n.id for n in NODES}
        assert len(page.edges) == len(EDGES)
        assert page.nodes[f"worker:{WORKER}"]["data-status"] == "ok"
        assert page.nodes[f"worker:{WORKER}"]["fill"] != RED
        assert page.nodes["store:redis"]["data-status"] == "ok"
        assert page.nodes["store:kafka"]["data-status"] == "ok"
        assert page.nodes["topic:events.interactions"]["data-status"] == "ok"
        browser.screenshot(url + "/", tmp_path / "before.png")

        worker.kill()  # a crash: no deregistration, the heartbeat simply stops
        wait_for(lambda: _node(url, f"worker:{WORKER}")["status"] == "down", 30, f"{WORKER} down")
        html = browser.dump_dom(url + "/")
        page = _parse(html)
        assert page.nodes[f"worker:{WORKER}"]["data-status"] == "down"
        assert page.nodes[f"worker:{WORKER}"]["fill"] == RED
        into = [e for e in page.edges if e["data-target"] == f"worker:{WORKER}"]
        assert into and all(e["data-status"] == "down" for e in into)
        assert re.search(rf"DOWN: [^<]*{WORKER}", html)
        browser.screenshot(url + "/", tmp_path / "after.png")  # kept in pytest's basetemp

        worker.start()  # again, then a clean stop (SIGTERM): grey "stopped", not red
        wait_for(lambda: _node(url, f"worker:{WORKER}")["status"] == "ok", 90, f"{WORKER} ok")
        worker.stop()
        wait_for(
            lambda: _node(url, f"worker:{WORKER}")["status"] == "stopped", 30, f"{WORKER} stopped"
        )
        page = _parse(browser.dump_dom(url + "/"))
        assert page.nodes[f"worker:{WORKER}"]["data-status"] == "stopped"
        assert page.nodes[f"worker:{WORKER}"]["fill"] != RED
    finally:
        worker.stop()
