"""Shared benchmark plumbing: a stack of the benchmark's own, machine facts, percentiles."""

from __future__ import annotations

import os
import platform
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from streamrec.infra.processes import free_port
from streamrec.infra.settings import Settings
from streamrec.infra.stack import StackManager
from streamrec.streams.admin import TopicManager


@contextmanager
def bench_stack(keep: bool = False, stack: dict[str, object] | None = None) -> Iterator[Settings]:
    """A fresh stack on free ports in a temp dir, so figures don't depend on earlier data;
    `stack` overrides stack settings (e.g. `kafka_brokers`)."""
    state = Path(tempfile.mkdtemp(prefix="streamrec-bench-"))
    settings = Settings().with_overrides(
        stack={
            "state_dir": state,
            "kafka_port": free_port(),
            "kafka_controller_port": free_port(),
            "redis_port": free_port(),
            **(stack or {}),
        },
        # Benchmarks measure serving without credentials unless they turn auth on themselves
        # (benchmarks/auth_bench.py measures what it costs).
        auth={"mode": "off"},
    )
    manager = StackManager(settings)
    try:
        manager.up()
        TopicManager(settings).apply()
        yield settings
    finally:
        manager.down(purge=not keep)


def thread_times(pid: int) -> Iterator[tuple[str, str, float, float]]:
    """(thread id, thread name, user seconds, system seconds) of each thread of a process so
    far, from /proc/PID/task (Linux); threads that end meanwhile are skipped."""
    tick = os.sysconf("SC_CLK_TCK")
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return  # the process ended
    for task in tasks:
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        yield task.name, name, int(fields[11]) / tick, int(fields[12]) / tick


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem_gb:.0f} GiB, Python {platform.python_version()}"


def percentiles(values: list[float], ps: tuple[float, ...] = (50, 95, 99)) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    out = {f"p{p:g}": float(np.percentile(arr, p)) for p in ps}
    out["max"] = float(arr.max())
    return out
