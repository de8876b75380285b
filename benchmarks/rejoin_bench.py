"""Rejoin benchmark: how long a session-features worker killed with SIGKILL and started again
processes nothing, under each way of joining its consumer group (streams.membership).

    python -m benchmarks.rejoin_bench [--events 20000]

On a fresh stack of its own: Feast applied, the ML-100K catalog published, the first
`--events` ratings replayed. For each configuration a worker of a new group catches up with
the log; then it is killed (SIGKILL: it never leaves its group), `--fresh` new events are
produced, and a new worker is started at once. The figure is the time from that start until
the group's stats count the new events, beside a cold start of the same worker into an
empty group of its own (start-up and catch-up of the same events, no dead member), so the
difference is the wait for the group. Configurations:
- `session 60 s, dynamic`: Faust's own default session timeout, as before;
- `session 10 s, dynamic`: `kafka.session_timeout_s` 10 (the default now);
- `session 10 s, static`: plus `kafka.member_slot` (group.instance.id).
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from datetime import UTC, datetime

import redis

from benchmarks.common import bench_stack, machine
from streamrec.features import feast_store
from streamrec.infra.settings import Settings
from streamrec.processors.session_features import stats_key
from streamrec.streams import datasets
from streamrec.streams.catalog import publish_items
from streamrec.streams.producer import bulk_producer, flush, produce_event
from streamrec.streams.replay import ReplayOptions, replay
from streamrec.streams.sources.movielens import MovieLensInteractions, load_items
from streamrec.streams.worker_process import WorkerProcess
from streamrec.topics import EVENTS_INTERACTIONS, Interaction

CONFIGS = {
    "session 60 s, dynamic": {"session_timeout_s": 60.0, "member_slot": ""},
    "session 10 s, dynamic": {"session_timeout_s": 10.0, "member_slot": ""},
    "session 10 s, static": {"session_timeout_s": 10.0, "member_slot": "0"},
}


def accepted(settings: Settings, group: str) -> int:
    raw = redis.Redis.from_url(settings.redis_url).hget(stats_key(group), "accepted")
    return int(raw or 0)


def wait_until(predicate, timeout_s: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)  # polling a real condition with a deadline
    return time.monotonic() - start


def produce_fresh(settings: Settings, n: int) -> None:
    tag = uuid.uuid4().hex[:8]
    producer = bulk_producer(settings)
    now = datetime.now(UTC)
    for i in range(n):
        event = Interaction(event_id=f"{tag}:{i}", user_id=f"r-{tag}-{i % 40}", item_id="1", ts=now)
        produce_event(producer, EVENTS_INTERACTIONS, event)
    flush(producer)


def measure(settings: Settings, name: str, kafka: dict[str, object], fresh: int) -> dict:
    s = settings.with_overrides(kafka=kafka)
    group = f"bench-rejoin-{uuid.uuid4().hex[:6]}"
    log_size = 0
    # Cold start: a new group, nothing dead in it; start-up plus catch-up of the log.
    w = WorkerProcess(s, "session-features", group).start()
    t0 = time.monotonic()
    wait_until(lambda: accepted(s, group) > 0, 300, "the first batch")
    first_batch = time.monotonic() - t0
    # Caught up: nothing new for a second.
    last, since = -1, time.monotonic()
    while time.monotonic() - since < 1.0:
        now_n = accepted(s, group)
        if now_n != last:
            last, since = now_n, time.monotonic()
        time.sleep(0.1)  # sampling the counter until it holds still
    log_size = last
    w.kill()
    produce_fresh(s, fresh)
    w.start()
    t1 = time.monotonic()
    wait_until(lambda: accepted(s, group) > log_size, 300, "the restarted worker's first batch")
    restart_first = time.monotonic() - t1
    wait_until(lambda: accepted(s, group) >= log_size + fresh, 300, "the fresh events")
    restart_all = time.monotonic() - t1
    w.stop()
    return {
        "config": name,
        "cold_start_first_batch_s": round(first_batch, 1),
        "restart_first_batch_s": round(restart_first, 1),
        "restart_fresh_done_s": round(restart_all, 1),
        "stall_s": round(restart_first - first_batch, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--fresh", type=int, default=200)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    with bench_stack() as settings:
        ml = datasets.fetch(settings, "ml-100k")
        feast_store.apply(settings)
        publish_items(settings, load_items(ml))
        replay(
            settings,
            MovieLensInteractions(ml),
            "ml-100k",
            ReplayOptions(limit=args.events, progress=False),
        )
        rows = [measure(settings, name, cfg, args.fresh) for name, cfg in CONFIGS.items()]
    out = {"machine": machine(), "events": args.events, "fresh": args.fresh, "rows": rows}
    print(json.dumps(out, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
