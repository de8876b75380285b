"""Models and candidates: the metric table, training time, candidate refresh latency.

1. Trains the two-tower and the ranker on ML-100K (`--device cpu|cuda`) in a fresh stack of
   its own and prints the evaluation table (all four scorers, cold start) and the training
   time per phase.
2. Promotes them, starts `streamrec worker candidates`, replays the ML-100K log so the
   processor's state (co-visitation, histories) is warm, then produces interactions at a
   sustained `--rate` for `--seconds` to random ML-100K users and measures, per event, the
   time from producing it to the user's rebuilt list being announced on the candidates topic
   (which happens right after the list is written to Redis): p50/p99.
3. Ranker inference: one user x 500 candidates, and 32 x 500 batched (what serving does).

`--write` puts the figures into BENCHMARKS.md (its own section).
"""

from __future__ import annotations

import argparse
import random
import re
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from benchmarks.common import bench_stack, machine, percentiles
from benchmarks.ranker_timing import ranker_speed
from streamrec.infra.settings import Settings
from streamrec.models.ranker import RankerModel
from streamrec.models.registry import ModelRegistry
from streamrec.models.report import markdown
from streamrec.models.train import train
from streamrec.streams import codecs
from streamrec.streams.producer import flush, latency_producer, produce_event
from streamrec.streams.replay import ReplayOptions, replay
from streamrec.streams.sources.movielens import MovieLensInteractions
from streamrec.streams.worker_process import WorkerProcess
from streamrec.topics import CANDIDATES, EVENTS_INTERACTIONS, Interaction

SECTION = "## Models and candidates"


class SummaryWatcher(threading.Thread):
    """Reads the candidates topic from its end; records (user, computed_at, seen at)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer(
            {
                **settings.kafka_config(),
                "group.id": f"bench-cand-{time.time_ns()}",
                "enable.auto.commit": False,
            }
        )
        md = self.consumer.list_topics(CANDIDATES.name, timeout=10).topics[CANDIDATES.name]
        parts = []
        for p in md.partitions:
            _, high = self.consumer.get_watermark_offsets(TopicPartition(CANDIDATES.name, p))
            parts.append(TopicPartition(CANDIDATES.name, p, high))
        self.consumer.assign(parts)
        self.seen: dict[str, list[tuple[float, float]]] = {}
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.stop.is_set():
            for msg in self.consumer.consume(1000, timeout=0.1):
                if msg.error():
                    continue
                s = codecs.decode(CANDIDATES, msg.value())
                with self.lock:
                    self.seen.setdefault(s.user_id, []).append(
                        (s.computed_at.timestamp(), time.time())
                    )
        self.consumer.close()


def refresh_latency(settings: Settings, rate: float, seconds: float, worker: WorkerProcess):
    users = [str(u) for u in range(1, 944)]
    items = [str(i) for i in range(1, 1683)]
    rng = random.Random(7)
    watcher = SummaryWatcher(settings)
    watcher.start()
    producer = latency_producer(settings)
    sent: list[tuple[str, float]] = []
    start = time.perf_counter()
    n = 0
    while time.perf_counter() - start < seconds:
        target = start + n / rate
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)  # pacing the sustained rate
        user = rng.choice(users)
        e = Interaction(
            event_id=f"bench-{n}",
            user_id=user,
            item_id=rng.choice(items),
            kind="view",
            ts=datetime.now(UTC),
        )
        sent.append((user, time.time()))
        produce_event(producer, EVENTS_INTERACTIONS, e)
        producer.poll(0)
        n += 1
    flush(producer)
    deadline = time.time() + 30
    latencies: list[float] = []
    while time.time() < deadline:
        if not worker.alive():
            raise RuntimeError(f"the candidates worker died; see {worker.log}")
        latencies, missing = _match(watcher, sent)
        if not missing:
            break
        time.sleep(0.5)  # waiting for the last rebuilds, bounded by the deadline
    watcher.stop.set()
    watcher.join(5)
    achieved = n / (time.perf_counter() - start)
    return latencies, len(sent) - len(latencies), achieved


def _match(watcher: SummaryWatcher, sent: list[tuple[str, float]]) -> tuple[list[float], int]:
    """Per event: the first rebuild of its user computed after it was produced."""
    out, missing = [], 0
    with watcher.lock:
        seen = {u: list(v) for u, v in watcher.seen.items()}
    for user, t in sent:
        arrival = next((at for computed, at in seen.get(user, []) if computed >= t), None)
        if arrival is None:
            missing += 1
        else:
            out.append((arrival - t) * 1000)
    return out, missing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--rate", type=float, default=50.0, help="events/s, sustained phase")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--retriever-epochs", type=int, default=None)
    parser.add_argument("--ranker-epochs", type=int, default=None)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()

    with bench_stack() as settings:
        settings = settings.with_overrides(models={"device": args.device})
        result = train(
            settings,
            force=True,
            retriever_epochs=args.retriever_epochs,
            ranker_epochs=args.ranker_epochs,
            device=args.device,
        )
        registry = ModelRegistry(settings)
        for kind in ("retriever", "ranker"):
            registry.promote(kind, result.ranker.version)
        model = RankerModel.load(result.ranker.path, args.device)
        p50_one, batched = ranker_speed(model)
        with WorkerProcess(settings, "candidates", "bench-candidates") as worker:
            t = time.perf_counter()
            replay(
                settings,
                MovieLensInteractions(Path(settings.data.cache_dir) / "ml-100k"),
                "ml-100k",
                ReplayOptions(progress=False),
                total=100_000,
            )
            _wait_idle(settings, worker)
            warm_s = time.perf_counter() - t
            lat, missing, achieved = refresh_latency(settings, args.rate, args.seconds, worker)

    pct = percentiles(lat) if lat else {"p50": float("nan"), "p99": float("nan")}
    secs = result.seconds
    lines = [
        SECTION,
        "",
        f"Command: `.venv/bin/python -m benchmarks.models_bench --device {args.device} "
        f"--rate {args.rate:g} --seconds {args.seconds:g} --write` (a fresh stack of its own;"
        " ML-100K).",
        f"Machine: {machine()}; device {result.device}. Date: {datetime.now(UTC):%Y-%m-%d}.",
        "",
        "Evaluation (per-user time split 80/10/10, full ranking, held-out cold-start users):",
        "",
        markdown(result.metrics, result.cold_start),
        "",
        "| what | figure |",
        "| --- | --- |",
        f"| training, total (load, content vectors, two-tower, ranker, evaluation) | "
        f"{secs['total']:.1f} s |",
        f"| of which two-tower / ranker / evaluation | {secs['two_tower']:.1f} s / "
        f"{secs['ranker']:.1f} s / {secs['evaluate']:.1f} s |",
        f"| ranker, 1 user x 500 candidates, p50 | {p50_one:.2f} ms |",
        f"| ranker, 32 x 500 batched | {batched:,.0f} candidates/s |",
        f"| replaying ML-100K through the candidates processor until idle | {warm_s:.1f} s |",
        f"| candidate refresh latency at {achieved:.0f} events/s sustained for "
        f"{args.seconds:g} s (produce -> list rebuilt and announced; debounce "
        f"{settings.candidates.debounce_ms} ms) | p50 {pct['p50']:.0f} ms, "
        f"p99 {pct['p99']:.0f} ms ({len(lat)} events, {missing} unmatched) |",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        _write(text)


def _wait_idle(settings: Settings, worker: WorkerProcess, quiet_s: float = 3.0) -> None:
    """Until the processor has written no list for `quiet_s` (it has caught up)."""
    watcher = SummaryWatcher(settings)
    watcher.start()
    last, count = time.time(), -1
    deadline = time.time() + 600
    while time.time() < deadline:
        if not worker.alive():
            raise RuntimeError(f"the candidates worker died; see {worker.log}")
        with watcher.lock:
            now_count = sum(len(v) for v in watcher.seen.values())
        if now_count != count:
            count, last = now_count, time.time()
        elif count > 0 and time.time() - last > quiet_s:
            break
        time.sleep(0.5)  # polling the topic reader, bounded by the deadline
    watcher.stop.set()
    watcher.join(5)


def _write(text: str) -> None:
    path = Path("BENCHMARKS.md")
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(SECTION) + r".*?(?=\n## |\Z)", re.S)
    if pattern.search(current):
        current = pattern.sub(text + "\n", current)
    else:
        current = current.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(current)


if __name__ == "__main__":
    main()
