"""Scale-out: two session workers in one group share the partitions; stopping one hands its
partitions, and their state (from the changelog), to the other with nothing lost or doubled."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from confluent_kafka.admin import AdminClient

from streamrec.streams.worker_process import WorkerProcess
from streamrec.topics import EVENTS_INTERACTIONS
from tests.feature_helpers import compare_users, prepare, replay_ml100k, stats, wait_caught_up
from tests.kafka_helpers import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N = 20_000
GROUP = "t-session-scale"


def assignments(settings, group: str) -> dict[str, set[int]]:
    """member id -> partitions of events.interactions it holds."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    desc = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return {
        m.member_id: {
            tp.partition
            for tp in (m.assignment.topic_partitions if m.assignment else [])
            if tp.topic == EVENTS_INTERACTIONS.name
        }
        for m in desc.members
    }


def _worker(settings, instance: str) -> WorkerProcess:
    w = WorkerProcess(
        settings,
        "session-features",
        GROUP,
        extra_env={"STREAMREC_FEATURES__INSTANCE": instance},
    )
    # Two processes of one group: give each its own pid file and log.
    w.pid_file = w.pid_file.with_name(f"{GROUP}-{instance}.pid")
    w.log_file = w.log_file.with_name(f"worker-{GROUP}-{instance}.log")
    return w


def test_two_workers_share_partitions_and_one_takes_over_from_the_other(isolated_stack, ml100k):
    settings = isolated_stack
    genres = prepare(settings, ml100k)
    a, b = _worker(settings, "a").start(), _worker(settings, "b").start()
    try:
        shared = wait_for(
            lambda: (
                (held := assignments(settings, GROUP))
                and len(held) == 2
                and all(held.values())
                and held
            ),
            240,
            "both workers to hold partitions of events.interactions",
            interval=0.5,
        )
        assert sorted(p for ps in shared.values() for p in ps) == list(range(6))
        # Paced (20 s of events), so the stream is still flowing when B stops.
        with ThreadPoolExecutor(1) as pool:
            replaying = pool.submit(replay_ml100k, settings, ml100k, N, 1000)
            wait_for(
                lambda: stats(settings, GROUP).get("accepted", 0) >= N // 5,
                180,
                "both workers to be mid-stream",
            )
            assert not replaying.done(), "the replay ended before B was stopped"
            b.stop()  # a clean stop: B leaves the group, A gets its partitions
            events = replaying.result()
        wait_for(
            lambda: list(assignments(settings, GROUP).values()) == [set(range(6))],
            120,
            "A to hold every partition",
            interval=0.5,
        )
        # 90 s is ample when A consumes (~2,000 events/s); the known stall would wait it out.
        wait_caught_up(settings, GROUP, a, timeout_s=90)
    finally:
        a.stop()
        b.stop()
    counts = stats(settings, GROUP)
    assert counts["accepted"] + counts.get("duplicate", 0) >= N
    # Every user, including those of B's partitions: nothing lost, nothing counted twice.
    compare_users(settings, events, genres, sorted(events, key=int))
