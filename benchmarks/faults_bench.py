"""Faults during a replay, counted: a broker and every stateful processor killed mid-stream,
or a broker cut off the network.

    python -m benchmarks.faults_bench [--schedule kills|partition] [--rate 2000] [--limit N]

On a fresh 3-node KRaft cluster of its own (RF 3, `min.insync.replicas` 2, acks=all) with
Redis and embedded ClickHouse, ML-100K is replayed at `--rate` events/s through the session
features, trending and analytics sink workers (real `streamrec worker` processes). During the
replay, on a fixed schedule:
- the analytics sink is killed with SIGKILL three times,
- the broker leading partition 0 of events.interactions is killed, and restarted once the
  other two acknowledge writes again,
- the session-features worker and the trending worker are each killed once.
Every killed worker is started again at once, as a supervisor would. With `--schedule
partition` the cluster's nodes run in network namespaces of their own (`stack.kafka_netns`,
root) and instead the broker leading partition 0 is cut off the network for `--cut-s`
seconds (30) while it goes on running, then healed. Once the replay is done
and every group has committed the whole log, it counts, against the log itself:
- the log: events produced once each (by event id);
- ClickHouse: rows with FINAL and, after `OPTIMIZE ... FINAL`, rows physically present;
- Feast: users whose online features differ from a recomputation from their events;
- trending: items whose merged window counts differ from a recomputation from the log.
For each fault it reports the time to recover: for a worker, from the kill until its group
commits past what it had committed at the kill; for the broker, until the log takes writes
again and until the node is back in every ISR; for a cut, also until each worker's group
commits again while it lasts, and from the heal until the node is back in every ISR; and,
per worker, whether its group's coordinator is the cut node and the messages its process
counted on /metrics before the cut, during it and in its last ~10 s. One JSON line,
`faults:`.

The oracles are the suite's own (`tests/feature_helpers.py`, `tests/features_reference.py`).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.common import bench_stack, machine
from streamrec.analytics.store import store_session
from streamrec.features.online import OnlineFeatures
from streamrec.infra import netns
from streamrec.infra.processes import free_port
from streamrec.infra.settings import Settings
from streamrec.infra.stack import StackManager
from streamrec.streams import datasets, metrics
from streamrec.streams.replay import ReplayOptions, replay
from streamrec.streams.sources.movielens import MovieLensInteractions
from streamrec.streams.worker_process import WorkerProcess
from streamrec.topics import EVENTS_INTERACTIONS
from tests.feature_helpers import (
    committed_to_end,
    merged_counts,
    per_user,
    prepare,
    window_counts,
)
from tests.features_reference import assert_features_equal, recompute
from tests.kafka_helpers import end_offsets, read_range

TOPIC = EVENTS_INTERACTIONS.name
WORKERS = {"session": "session-features", "trending": "trending", "sink": "analytics-sink"}
# Seconds into the replay: (what, target). Spread so that each recovery is seen on its own.
SCHEDULES = {
    "kills": [
        (4.0, "kill", "sink"),
        (8.0, "broker", ""),
        (20.0, "kill", "session"),
        (26.0, "kill", "trending"),
        (32.0, "kill", "sink"),
        (40.0, "kill", "sink"),
    ],
    "partition": [(8.0, "cut", "")],
}
CATCH_UP_S = 600.0


def group_of(worker: str) -> str:
    return f"faults-{worker}"


def committed_total(settings: Settings, group: str) -> int:
    parts = [TopicPartition(TOPIC, p) for p in range(EVENTS_INTERACTIONS.partitions)]
    consumer = Consumer({**settings.kafka_config(), "group.id": group})
    try:
        return sum(max(tp.offset, 0) for tp in consumer.committed(parts, timeout=5))
    finally:
        consumer.close()


def processed(settings: Settings, worker: str) -> float:
    """Messages the running `worker` process has handled, from its /metrics: a consumer
    that goes on without committing (its group's coordinator cut off) still counts here."""
    total = 0.0
    for beat in metrics.live_workers(settings):
        if beat.name == WORKERS[worker] and beat.group == group_of(worker):
            with urllib.request.urlopen(beat.metrics_url, timeout=2) as answer:
                text = answer.read().decode()
            for family in text_string_to_metric_families(text):
                if family.name == "streamrec_events_processed":
                    total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return total


def coordinators(admin: AdminClient) -> dict[str, int]:
    """worker -> the node coordinating its group."""
    groups = {group_of(w): w for w in WORKERS}
    found = admin.describe_consumer_groups(list(groups))
    return {groups[g]: f.result(timeout=10).coordinator.id for g, f in found.items()}


def probe(check: Callable[[], bool]) -> bool:
    """`check()`, or False when the cluster did not answer it (a broker is down): a
    recovery probe is asked again at the next tick."""
    try:
        return check()
    except KafkaException:
        return False


def wait_in_every_isr(admin: AdminClient, node: int) -> None:
    """Until `node` is in the ISR of every partition of the topic (bounded by the run's
    deadline: the caller's thread is joined with it)."""
    while not probe(
        lambda: all(
            node in p.isrs
            for p in admin.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions.values()
        )
    ):
        time.sleep(0.2)  # polling the ISR


@dataclass
class Recovery:
    fault: str
    at: float  # monotonic time of the kill
    done: Callable[[], bool]
    seconds: float | None = None
    detail: dict[str, float] = field(default_factory=dict)


class Faults:
    """Runs the schedule against the workers and the cluster, and times each recovery."""

    def __init__(self, settings: Settings, manager: StackManager) -> None:
        self.settings = settings
        self.manager = manager
        self.workers = {
            w: WorkerProcess(settings, name, group_of(w)) for w, name in WORKERS.items()
        }
        self.recoveries: list[Recovery] = []
        self.restarts: list[threading.Thread] = []

    def start_workers(self) -> None:
        for w in self.workers.values():
            w.start()

    def kill_worker(self, worker: str) -> None:
        group = group_of(worker)
        before = committed_total(self.settings, group)
        proc = self.workers[worker]
        proc.kill()
        at = time.monotonic()
        proc.start()
        n = sum(r.fault.startswith(worker) for r in self.recoveries) + 1
        self.recoveries.append(
            Recovery(
                f"{worker} #{n}",
                at,
                lambda: committed_total(self.settings, group) > before,
            )
        )

    def kill_broker(self) -> None:
        admin = AdminClient(self.settings.kafka_config())
        victim = admin.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions[0].leader
        ends = sum(end_offsets(self.settings, TOPIC).values())
        assert self.manager.kafka_nodes[victim - 1].kill()
        at = time.monotonic()
        recovery = Recovery(f"broker {victim}", at, lambda: False)

        def writes_again() -> bool:
            return probe(lambda: sum(end_offsets(self.settings, TOPIC).values()) > ends)

        def rejoin() -> None:
            while not writes_again():
                time.sleep(0.2)  # polling the log's end, bounded by the scenario's deadline
            recovery.detail["writes_again_s"] = round(time.monotonic() - at, 2)
            self.manager.kafka_nodes[victim - 1].start()
            wait_in_every_isr(admin, victim)
            recovery.seconds = round(time.monotonic() - at, 2)

        thread = threading.Thread(target=rejoin, daemon=True)
        thread.start()
        self.restarts.append(thread)
        self.recoveries.append(recovery)

    def cut_broker(self, seconds: float) -> None:
        """Cut the leader of partition 0 off the network for `seconds`, then heal it."""
        admin = AdminClient(self.settings.kafka_config())
        victim = admin.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions[0].leader
        ends = sum(end_offsets(self.settings, TOPIC).values())
        before = {w: committed_total(self.settings, group_of(w)) for w in WORKERS}
        coordinating = coordinators(admin)
        handled = {w: processed(self.settings, w) for w in WORKERS}
        netns.cut(self.settings, victim)
        at = time.monotonic()
        recovery = Recovery(f"cut {victim}", at, lambda: False, detail={"cut_s": seconds})
        for w, node in coordinating.items():
            recovery.detail[f"{w}_coordinator_cut"] = float(node == victim)
            recovery.detail[f"{w}_processed_before_cut"] = handled[w]

        def during_and_after() -> None:
            waiting = set(WORKERS)
            writes = False
            late: dict[str, float] = {}  # what each worker had handled ~10 s before the heal
            while time.monotonic() < at + seconds:
                if not late and time.monotonic() >= at + seconds - 10:
                    late = {w: processed(self.settings, w) for w in WORKERS}
                    recovery.detail["last_window_from_s"] = round(time.monotonic() - at, 2)
                if not writes and probe(
                    lambda: sum(end_offsets(self.settings, TOPIC).values()) > ends
                ):
                    writes = True
                    recovery.detail["writes_again_s"] = round(time.monotonic() - at, 2)
                for w in sorted(waiting):
                    if probe(lambda w=w: committed_total(self.settings, group_of(w)) > before[w]):
                        waiting.discard(w)
                        recovery.detail[f"{w}_commits_s"] = round(time.monotonic() - at, 2)
                time.sleep(0.2)  # polling the log and the groups while the cut lasts
            for w in WORKERS:
                # The messages each group committed while the cut lasted (-1: unreadable).
                try:
                    done = committed_total(self.settings, group_of(w)) - before[w]
                except KafkaException:
                    done = -1
                recovery.detail[f"{w}_committed_during_cut"] = done
                # Handled while the cut lasted, and in its last 10 s: still consuming?
                now = processed(self.settings, w)
                recovery.detail[f"{w}_processed_during_cut"] = now - handled[w]
                recovery.detail[f"{w}_processed_in_last_window"] = now - late.get(w, now)
            assert self.manager.kafka_nodes[victim - 1].pid() is not None, "the cut node died"
            netns.heal(self.settings, victim)
            healed = time.monotonic()
            wait_in_every_isr(admin, victim)
            recovery.detail["isr_after_heal_s"] = round(time.monotonic() - healed, 2)
            recovery.seconds = round(time.monotonic() - at, 2)

        thread = threading.Thread(target=during_and_after, daemon=True)
        thread.start()
        self.restarts.append(thread)
        self.recoveries.append(recovery)

    def poll_recoveries(self) -> None:
        for r in self.recoveries:
            if r.seconds is None and r.fault.split()[0] in WORKERS and probe(r.done):
                r.seconds = round(time.monotonic() - r.at, 2)

    def stop_workers(self) -> None:
        for w in self.workers.values():
            w.stop()


def run(schedule: str, rate: float, limit: int | None, cut_s: float) -> dict:
    ml = datasets.fetch(Settings())
    with bench_stack(
        stack={
            "kafka_brokers": 3,
            "kafka_extra_ports": [free_port(), free_port()],
            "kafka_extra_controller_ports": [free_port(), free_port()],
            "kafka_netns": schedule == "partition",
        }
    ) as settings:
        manager = StackManager(settings)
        genres = prepare(settings, ml)
        faults = Faults(settings, manager)
        faults.start_workers()
        reports: list = []
        replaying = threading.Thread(
            target=lambda: reports.append(
                replay(
                    settings,
                    MovieLensInteractions(ml),
                    "ml-100k",
                    ReplayOptions(pacing="rate", rate=rate, limit=limit, progress=False),
                )
            ),
            daemon=True,
        )
        t0 = time.monotonic()
        replaying.start()
        pending = list(SCHEDULES[schedule])
        deadline = t0 + CATCH_UP_S
        try:
            while replaying.is_alive() or pending:
                assert time.monotonic() < deadline, "the replay did not finish"
                now = time.monotonic() - t0
                while pending and pending[0][0] <= now:
                    _, what, target = pending.pop(0)
                    print(f"faults: {now:5.1f} s {what} {target}", flush=True)
                    if what == "broker":
                        faults.kill_broker()
                    elif what == "cut":
                        faults.cut_broker(cut_s)
                    else:
                        faults.kill_worker(target)
                faults.poll_recoveries()
                time.sleep(0.2)  # the schedule's clock and the recoveries' probe
            replay_s = time.monotonic() - t0
            for thread in faults.restarts:
                thread.join(max(1.0, deadline - time.monotonic()))
            # Every group has committed the whole log, and trending has published it.
            want_trending = window_counts(settings)
            while (
                not all(committed_to_end(settings, group_of(w)) for w in WORKERS)
                or merged_counts(settings) != want_trending
            ):
                assert time.monotonic() < deadline, "the workers did not catch up"
                for name, w in faults.workers.items():
                    assert w.alive(), f"{name} died; see {w.log}"
                faults.poll_recoveries()
                time.sleep(0.5)  # polling the groups' offsets
            caught_up_s = time.monotonic() - t0
            faults.poll_recoveries()
            got_trending = merged_counts(settings)
        finally:
            faults.stop_workers()  # the sink owns the chDB directory while it runs

        report = reports[0]
        read = [
            json.loads(v)["event_id"]
            for _k, v in read_range(settings, TOPIC, {}, end_offsets(settings, TOPIC))
        ]
        in_log = Counter(read)
        events = per_user(ml, limit)
        produced = sum(len(v) for v in events.values())
        online = OnlineFeatures(settings).get_user_features(sorted(events))
        wrong_users = 0
        for user, rows in events.items():
            try:
                assert online[user].found
                want = recompute(rows, genres, settings.features)
                assert_features_equal(online[user].model_dump(), want, user)
            except AssertionError:
                wrong_users += 1
        wrong_items = sum(
            got_trending[w].get(item) != n
            for w, counts in want_trending.items()
            for item, n in counts.items()
        ) + sum(item not in want_trending[w] for w in got_trending for item in got_trending[w])
        db = settings.clickhouse.database
        with store_session(settings) as client:
            final = int(client.command(f"SELECT count() FROM {db}.interactions FINAL"))
            distinct = int(client.command(f"SELECT uniqExact(event_id) FROM {db}.interactions"))
            client.command(f"OPTIMIZE TABLE {db}.interactions FINAL")
            physical = int(client.command(f"SELECT count() FROM {db}.interactions"))
        return {
            "schedule": schedule,
            "events": produced,
            "replay_produced": report.produced,
            "rate_per_s": rate,
            "replay_s": round(replay_s, 1),
            "caught_up_s": round(caught_up_s, 1),
            "log_lost": produced - len(in_log),
            "log_duplicated": sum(c - 1 for c in in_log.values()),
            "clickhouse_final": final,
            "clickhouse_distinct": distinct,
            "clickhouse_after_optimize": physical,
            "feast_users": len(events),
            "feast_users_wrong": wrong_users,
            "trending_items_wrong": wrong_items,
            "recover_s": {r.fault: {"s": r.seconds, **r.detail} for r in faults.recoveries},
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--schedule", choices=sorted(SCHEDULES), default="kills")
    parser.add_argument("--rate", type=float, default=2000.0, help="replay events/s")
    parser.add_argument("--limit", type=int, default=None, help="only the first N ratings")
    parser.add_argument("--cut-s", type=float, default=30.0, help="how long a cut lasts")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print("faults:", json.dumps(run(args.schedule, args.rate, args.limit, args.cut_s)))


if __name__ == "__main__":
    main()
