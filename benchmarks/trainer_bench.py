"""The trainer worker on ML-100K: retraining time and CPU, and the evaluation gate's figures.

In a fresh stack of its own, with ML-100K's real timestamps:
1. the catalog and the oldest 80% of the log (by time) are produced; `streamrec worker
   trainer` (default settings: 3+3 epochs, 1 torch thread, nice 10, the split's metric table)
   trains the first candidate, which is promoted (nothing to compare with);
2. the next 10% arrive; a worker with `trainer.debug_shuffle_items` (for comparison only)
   retrains on shuffled item ids, and the gate must stop it;
3. the newest 10% arrive; a normal worker retrains, and the gate compares it with the first.
   `--tower attention` trains this third candidate with the sequential user tower
   (`models.user_tower`, ADR 0136): the gate then judges the new tower against the mean one.

Per training it prints the trigger, the wall and CPU seconds the worker measured (training,
split evaluation and gate), the worker process's CPU from /proc, and the gate's verdict.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

import numpy as np
import redis

from benchmarks.common import bench_stack, machine, thread_times
from streamrec.models.dataset import load_catalog, load_events
from streamrec.models.registry import ModelRegistry
from streamrec.processors.trainer import NAME, status_key
from streamrec.streams.catalog import publish_items
from streamrec.streams.producer import DeliveryTracker, bulk_producer, flush, produce_event
from streamrec.streams.worker_process import WorkerProcess
from streamrec.topics import EVENTS_INTERACTIONS, Interaction

GROUP = "bench-trainer"


def produce(settings, frame) -> None:  # type: ignore[no-untyped-def]
    producer, tracker = bulk_producer(settings), DeliveryTracker()
    for r in frame.itertuples():
        event = Interaction(
            event_id=f"ml-{r.seq}",
            user_id=str(r.user_id),
            item_id=str(r.item_id),
            kind="rating",
            rating=None if np.isnan(r.rating) else float(r.rating),
            ts=datetime.fromtimestamp(int(r.ts), UTC),
        )
        produce_event(producer, EVENTS_INTERACTIONS, event, tracker)
    flush(producer)
    tracker.raise_if_failed()


def run_worker(settings, store, previous: str | None, env: dict[str, str], timeout_s: float):  # type: ignore[no-untyped-def]
    """Start a trainer, wait for a candidate other than `previous`, stop it; its figures."""
    store.delete(status_key(GROUP))
    with WorkerProcess(settings, NAME, group=GROUP, extra_env=env) as worker:
        deadline = time.monotonic() + timeout_s
        while True:
            if not worker.alive():
                raise RuntimeError(worker.log.read_text()[-3000:])
            s = {k.decode(): v.decode() for k, v in store.hgetall(status_key(GROUP)).items()}
            if int(s.get("trainings", 0)) >= 1 and s.get("last_version") != previous:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"no candidate in {timeout_s} s: {s}")
            time.sleep(0.5)  # polling the worker's status with a deadline
        cpu = sum(u + s_ for _, _, u, s_ in thread_times(worker.proc.pid))
    return s, cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument(
        "--tower", choices=("mean", "attention"), default="mean", help="candidate 3's user tower"
    )
    args = parser.parse_args()
    print(machine())
    with bench_stack() as base:
        settings = base.with_overrides(trainer={"min_new_interactions": 5000, "min_gap_s": 0})
        store = redis.Redis.from_url(settings.redis_url)
        registry = ModelRegistry(settings)
        events = load_events(settings).sort_values(["ts", "seq"], kind="stable")
        q8, q9 = np.quantile(events.ts, [0.8, 0.9])
        parts = [events[events.ts < q8], events[(events.ts >= q8) & (events.ts < q9)]]
        parts.append(events[events.ts >= q9])
        publish_items(settings, load_catalog(settings))
        envs = [
            {},
            {"STREAMREC_TRAINER__DEBUG_SHUFFLE_ITEMS": "true"},
            {"STREAMREC_MODELS__USER_TOWER": args.tower},
        ]
        previous = None
        for n, (part, env) in enumerate(zip(parts, envs, strict=True), 1):
            produce(settings, part)
            t = time.perf_counter()
            s, cpu = run_worker(settings, store, previous, env, args.timeout)
            wall = time.perf_counter() - t
            previous = s["last_version"]
            m = registry.get("ranker", previous).manifest.model_extra
            tr, gate = m["trainer"], m["gate"]
            print(
                f"\n{n}. +{len(part):,} events ({'shuffled ids' if n == 2 else 'normal'}, "
                f"{env.get('STREAMREC_MODELS__USER_TOWER', 'mean')} user tower): "
                f"{previous} trigger {s['last_trigger']}, stage {s['last_stage']}"
            )
            print(
                f"   worker-measured: wall {tr['wall_seconds']} s, CPU {tr['cpu_seconds']} s "
                f"(threads {tr['threads']}, nice {tr['nice']}); phases "
                + ", ".join(f"{k} {v:.1f}" for k, v in m["training_seconds"].items())
            )
            print(f"   worker process CPU at stop (start-up, log read, training): {cpu:.1f} s")
            print(f"   start to candidate: {wall:.1f} s")
            print(
                f"   gate: passed {gate['passed']} ({gate['reason']}); "
                f"hold-out from {gate['holdout_from']}, {gate['holdout_events']} events"
            )
            if gate.get("verdict"):
                v = gate["verdict"]
                print(f"   {v['users']} users, margin {v['margin']}, {v['samples']} resamples")
                for metric, c in v["metrics"].items():
                    print(
                        f"   {metric}: candidate {c['candidate']:.4f} promoted "
                        f"{c['promoted']:.4f} diff {c['diff']:+.4f} "
                        f"CI [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] passed {c['passed']}"
                    )
            tt = m["evaluation"].get("two-tower + ranker")
            if tt:
                print(f"   split test (two-tower + ranker): NDCG@20 {tt['ndcg_20']:.4f}")


if __name__ == "__main__":
    main()
