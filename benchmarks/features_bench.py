"""Session features benchmark: freshness through the online store, and one worker's throughput.

    python -m benchmarks.features_bench [--seconds 20] [--rate 2000] [--backlog 60000]
        [--poll-ms 50] [--no-freshness] [--no-bare] [--profile worker.svg|.json|.txt]

On a fresh stack of its own, with one `streamrec worker session-features` process:
- throughput: a backlog of `--backlog` events is produced first, then the worker is timed
  from its first accepted event to its last (events/s one worker sustains, Feast writes and
  changelog included), and its CPU time per event is read from /proc (a figure that, unlike
  events/s, hardly depends on what else the machine runs), also split by thread name;
  `--profile` runs py-spy on the worker meanwhile (GIL-holding samples, py-spy pinned to the
  last core);
- the ceiling, same run: a bare Faust agent (the interaction-counter worker: consume and
  validate, nothing else) of another group reads the same topic from the start; its
  events/s and CPU per event, and the session worker's ratio to it (`--no-bare` skips it);
- freshness at `--rate` events/s (default 2,000) and at 90% of the measured maximum, each for
  `--seconds`: every 10th event is a probe; a reader polls Feast's `get_online_features`
  for the probes' users and records, per probe, the time from `produce()` to the moment its
  event time is visible as the user's `last_event_ms`. Reported: p50, p99, max. The poll
  loop's own period (one Feast read of up to 200 users, at most one every `--poll-ms`) is
  included: the figure is what a reader of the online store sees. Also reported: the
  worker's CPU per event during the phase and that of the measuring process (producer and
  reader), which shares the machine with the worker.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.common import bench_stack, machine, thread_times
from streamrec.features import feast_store
from streamrec.features.freshness import group_lag, measure_freshness
from streamrec.features.session import ts_ms
from streamrec.infra.settings import Settings
from streamrec.processors.interaction_counter import counter_key
from streamrec.processors.session_features import stats_key
from streamrec.streams.catalog import publish_items
from streamrec.streams.datasets import fetch
from streamrec.streams.producer import bulk_producer, flush, latency_producer, produce_event
from streamrec.streams.sources.movielens import load_items
from streamrec.streams.worker_process import WorkerProcess
from streamrec.topics import EVENTS_INTERACTIONS, Interaction

USERS = 5000


def _event(n: int, tag: str, items: list[str], now_ms: int) -> Interaction:
    return Interaction(
        event_id=f"bench:{tag}:{n}",
        user_id=f"b{tag}-{n % USERS}",
        item_id=items[n % len(items)],
        kind="view",
        ts=datetime.fromtimestamp(now_ms / 1000, UTC),
    )


def accepted(settings: Settings, group: str) -> int:
    import redis

    return int(redis.Redis.from_url(settings.redis_url).hget(stats_key(group), "accepted") or 0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far per thread name (`comm`) of a process, threads of one name summed."""
    out: dict[str, float] = {}
    for _tid, name, user, system in thread_times(pid):
        out[name] = out.get(name, 0.0) + user + system
    return out


def profiler(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling `pid` (100 Hz, Python frames) until interrupted; its output to `out`."""
    py_spy = Path(sys.executable).with_name("py-spy")
    # Pinned to the last core, and GIL-holding samples only: what the worker's Python costs.
    argv = ["taskset", "-c", str((os.cpu_count() or 1) - 1)]
    argv += [str(py_spy), "record", "--gil", "--pid", str(pid), "--rate", "100"]
    formats = {".json": "speedscope", ".txt": "raw"}  # raw: collapsed stacks, one per line
    argv += ["--format", formats.get(out.suffix, "flamegraph")]
    argv += ["--output", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def throughput(
    settings: Settings,
    group: str,
    items: list[str],
    backlog: int,
    pid: int,
    profile: Path | None = None,
) -> tuple[float, float]:
    """(events/s, worker CPU microseconds per event) while the worker drains a backlog.

    The CPU cost per event hardly depends on what else runs on the machine; events/s does.
    With `profile`, py-spy samples the worker while it drains (`--profile`).
    """
    base = accepted(settings, group)
    producer = bulk_producer(settings)
    now = ts_ms(time.time())
    for n in range(backlog):
        produce_event(producer, EVENTS_INTERACTIONS, _event(n, "tp", items, now + n))
    flush(producer)
    first: tuple[float, int, float] | None = None
    threads: dict[str, float] = {}
    spy = None
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            seen = accepted(settings, group) - base
            t = time.perf_counter()
            if seen and first is None:
                first = (t, seen, cpu_seconds(pid))
                threads = thread_cpu(pid)
                if profile is not None:
                    spy = profiler(pid, profile)
            if seen >= backlog:
                assert first is not None
                n = seen - first[1]
                after = thread_cpu(pid)
                split = sorted(((v - threads.get(k, 0.0)) / n * 1e6, k) for k, v in after.items())
                print(
                    "worker CPU per event by thread:",
                    ", ".join(f"{name} {us:.0f} us" for us, name in reversed(split) if us >= 5),
                )
                return n / (t - first[0]), (cpu_seconds(pid) - first[2]) / n * 1e6
            time.sleep(0.05)  # polling the worker's counter until the backlog is consumed
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            spy.wait(60)
    raise RuntimeError("the worker did not consume the backlog in 600 s")


def bare_agent(settings: Settings, total: int) -> tuple[float, float]:
    """(events/s, CPU microseconds per event) of a bare Faust agent (the interaction counter,
    another group) reading the topic's first `total` events: the ceiling of any Faust agent
    on this topic, in the same run. Timed from its first counted batch to its last."""
    import redis

    group = "bench-bare-agent"
    r = redis.Redis.from_url(settings.redis_url)
    with WorkerProcess(settings, "interaction-counter", group) as worker:
        assert worker.proc is not None
        first: tuple[float, int, float] | None = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            seen = int(r.get(counter_key(group)) or 0)
            t = time.perf_counter()
            if seen and first is None:
                first = (t, seen, cpu_seconds(worker.proc.pid))
            if seen >= total:
                assert first is not None
                n = seen - first[1]
                return n / (t - first[0]), (cpu_seconds(worker.proc.pid) - first[2]) / n * 1e6
            if not worker.alive():
                raise RuntimeError(f"the bare agent stopped; see {worker.log}")
            time.sleep(0.05)  # polling the agent's counter until it has read the topic
    raise RuntimeError("the bare agent did not read the topic in 600 s")


def warm_up(settings: Settings, group: str, items: list[str], worker: WorkerProcess) -> None:
    """Wait until the worker has started and handled one event (start-up is not measured)."""
    producer = latency_producer(settings)
    produce_event(producer, EVENTS_INTERACTIONS, _event(0, "warm", items, ts_ms(time.time())))
    flush(producer)
    deadline = time.monotonic() + 300
    while accepted(settings, group) < 1:
        if not worker.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not start; see {worker.log}")
        time.sleep(0.2)  # polling the worker's counter while it starts


def wait_caught_up(settings: Settings, group: str, timeout_s: float = 600) -> None:
    """Each measurement starts with the worker caught up (no backlog left from the last)."""
    deadline = time.monotonic() + timeout_s
    while group_lag(settings, group) > 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not catch up in {timeout_s:.0f} s")
        time.sleep(0.5)  # polling the group's committed offsets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--backlog", type=int, default=60_000)
    parser.add_argument("--poll-ms", type=float, default=50.0, help="freshness reader period")
    parser.add_argument("--no-freshness", action="store_true", help="throughput only")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare-agent ceiling")
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy the worker while it drains the backlog (.svg, .json, .txt)",
    )
    args = parser.parse_args()
    print(machine(), f"load average {os.getloadavg()[0]:.1f}")
    with bench_stack() as settings:
        feast_store.apply(settings)
        catalog = load_items(fetch(settings))
        publish_items(settings, catalog)
        items = [i.item_id for i in catalog]
        group = "bench-session"
        with WorkerProcess(settings, "session-features", group) as worker:
            warm_up(settings, group, items, worker)
            assert worker.proc is not None
            tp, cpu_us = throughput(
                settings, group, items, args.backlog, worker.proc.pid, args.profile
            )
            print(
                f"throughput: {tp:,.0f} events/s (one worker, backlog {args.backlog:,}); "
                f"worker CPU {cpu_us:,.0f} us per event (at most {1e6 / cpu_us:,.0f} events/s "
                "on one idle core)"
            )
            if not args.no_bare:
                # The topic holds the warm-up event and the backlog.
                bare, bare_us = bare_agent(settings, args.backlog + 1)
                print(
                    f"bare Faust agent (interaction counter), same topic: {bare:,.0f} events/s, "
                    f"CPU {bare_us:,.0f} us per event; session worker / bare agent = "
                    f"{tp / bare:.2f}"
                )
            rates = () if args.no_freshness else (("target", args.rate), ("90% of max", 0.9 * tp))
            for label, rate in rates:
                wait_caught_up(settings, group)
                cpu0 = cpu_seconds(worker.proc.pid)
                fr = measure_freshness(
                    settings, items, rate, args.seconds, poll_s=args.poll_ms / 1000
                )
                events = max(int(rate * args.seconds), 1)  # what measure_freshness produced
                worker_us = (cpu_seconds(worker.proc.pid) - cpu0) / events * 1e6
                print(
                    f"freshness at {label} {fr.rate:,.0f} events/s ({fr.probes} probes, "
                    f"{fr.unseen} unseen): p50 {fr.p50_ms:.0f} ms, p99 {fr.p99_ms:.0f} ms, "
                    f"max {fr.max_ms:.0f} ms; worker CPU {worker_us:.0f} us per event "
                    f"(grace period included), the measuring process's {fr.measure_cpu_us:.0f} us"
                )
            print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
