"""Memory of each process the Kubernetes manifests run, to size their requests and limits.

On a fresh stack of its own: the ML-100K catalog and its 100,000 ratings on the topics, the
Feast objects applied, a ranker and retriever trained and promoted (`streamrec train
--promote`). Then, one at a time, each `streamrec worker NAME` of the registry runs until
its consumer group has caught up (or `--seconds` pass), and `streamrec serve` answers
`--requests` requests; meanwhile the process and its children (the content pipeline's model
processes) are sampled from /proc every 0.2 s. Reported per process: the peak of the summed
PSS (what a container's memory cgroup is charged for its processes, shared pages split) and
the peak summed RSS (shared pages counted in each process: an upper bound).

Usage: `python -m benchmarks.deploy_footprint [--seconds 60] [--requests 2000] [--only serve]`
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import httpx

from benchmarks.common import bench_stack, machine
from streamrec.infra.processes import free_port, streamrec_argv
from streamrec.infra.settings import Settings
from streamrec.processors.registry import WORKERS
from streamrec.serving.process import ServeProcess
from streamrec.streams.lag import admin_client, consumer_lags
from streamrec.streams.worker_process import WorkerProcess

# Workers without a consumer group of their own to wait on: they read whole topics.
NO_GROUP = {"vector-indexer", "trainer"}
SAMPLE_S = 0.2


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (from /proc/*/stat's parent field)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        parents[int(stat.parent.name)] = int(fields[1])
    tree, frontier = [pid], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


def _memory_kib(pids: list[int]) -> tuple[int, int]:
    """Summed (PSS, RSS) in KiB of `pids` that still exist (smaps_rollup)."""
    pss = rss = 0
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith("Pss:"):
                pss += int(line.split()[1])
            elif line.startswith("Rss:"):
                rss += int(line.split()[1])
    return pss, rss


class Sampler:
    """Peak summed PSS and RSS of a process tree, sampled on a thread until `stop()`."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_pss, self.peak_rss = pid, 0, 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(SAMPLE_S):
            pss, rss = _memory_kib(_tree(self.pid))
            self.peak_pss, self.peak_rss = max(self.peak_pss, pss), max(self.peak_rss, rss)

    def stop(self) -> tuple[float, float]:
        self._done.set()
        self._thread.join()
        return self.peak_pss / 1024, self.peak_rss / 1024


def _cli(settings: Settings, *args: str) -> None:
    env = {**os.environ, **settings.to_env()}
    subprocess.run(streamrec_argv(*args), env=env, check=True, capture_output=True)


def _caught_up(settings: Settings, group: str, admin: object) -> bool:
    lags = consumer_lags(admin, groups=[group]).get(group, {})
    return bool(lags) and all(lag == 0 for lag in lags.values())


def run_worker(settings: Settings, name: str, seconds: float, admin: object) -> dict:
    group = f"footprint-{name}"
    started = time.monotonic()
    worker = WorkerProcess(settings, name, group=group).start()
    sampler = Sampler(worker.proc.pid)
    caught_up = False
    try:
        deadline = started + seconds
        while time.monotonic() < deadline and worker.alive():
            if name not in NO_GROUP and _caught_up(settings, group, admin):
                caught_up = True
                time.sleep(3)  # a few more samples once the backlog is done
                break
            time.sleep(1)  # polling the group's lag, bounded by the deadline
    finally:
        alive = worker.alive()
        pss, rss = sampler.stop()
        worker.stop()
    return {
        "process": f"worker {name}",
        "pss_mib": round(pss),
        "rss_mib": round(rss),
        "caught_up": caught_up,
        "alive": alive,
        "seconds": round(time.monotonic() - started, 1),
    }


def run_serving(settings: Settings, requests: int) -> dict:
    started = time.monotonic()
    serving = ServeProcess(settings).start()
    sampler = Sampler(serving.proc.pid)
    ok = 0
    try:
        with httpx.Client(base_url=serving.url, timeout=5) as client:
            for i in range(requests):
                answer = client.get(f"/v1/users/{1 + i % 943}/recommendations", params={"k": 10})
                ok += answer.status_code == 200
    finally:
        pss, rss = sampler.stop()
        serving.stop()
    return {
        "process": "serve",
        "pss_mib": round(pss),
        "rss_mib": round(rss),
        "answered": ok,
        "seconds": round(time.monotonic() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="longest run per worker")
    parser.add_argument("--requests", type=int, default=2000, help="requests sent to serving")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--only", default="", help="comma-separated: worker names and/or 'serve' (default: all)"
    )
    args = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    with bench_stack() as settings:
        settings = settings.with_overrides(
            serving={"port": free_port()}, analytics={"metrics_port": 0}
        )
        t0 = time.monotonic()
        for step in (
            ("features", "apply"),
            ("catalog", "load", "ml-100k"),
            ("replay", "ml-100k"),
            ("train", "--promote"),
        ):
            _cli(settings, *step)
        print(f"data and models ready in {time.monotonic() - t0:.0f} s", flush=True)
        admin = admin_client(settings)
        results = []
        only = {n for n in args.only.split(",") if n}
        for name in sorted(WORKERS):
            if name == "llm-enricher" or (only and name not in only):
                continue  # the enricher needs an LLM provider; idle without one
            results.append(run_worker(settings, name, args.seconds, admin))
            print(json.dumps(results[-1]), flush=True)
        if not only or "serve" in only:
            results.append(run_serving(settings, args.requests))
            print(json.dumps(results[-1]), flush=True)
    print("\n| process | peak PSS (MiB) | peak RSS (MiB) | run |")
    print("| --- | ---: | ---: | --- |")
    for r in results:
        run = (
            f"{r['answered']} of {args.requests} answered"
            if "answered" in r
            else ("caught up" if r["caught_up"] else "did not catch up")
            + ("" if r["alive"] else ", exited")
        )
        print(f"| {r['process']} | {r['pss_mib']:,} | {r['rss_mib']:,} | {run}, {r['seconds']} s |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
