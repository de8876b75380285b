"""The analytics sink against a real broker and embedded ClickHouse (chDB), as a worker process.

The sink process owns the chDB directory while it runs, so the test reads ClickHouse only
while no sink runs (ADR 0051).
"""

from __future__ import annotations

import json

import pytest

from streamrec.processors.analytics_sink import NAME
from streamrec.streams.worker_process import WorkerProcess
from streamrec.topics import DEAD_LETTERS
from tests.integration.analytics import helpers
from tests.kafka_helpers import end_offsets, read_range, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _sink(
    settings, group: str, faults: dict[str, object] | None = None, **analytics: object
) -> WorkerProcess:
    if analytics or faults:
        settings = settings.with_overrides(analytics=analytics, faults=faults or {})
    return WorkerProcess(settings, NAME, group=group)


def test_rows_equal_events_and_replays_do_not_double_count(isolated_stack, unique):
    settings = isolated_stack
    group = f"t-sink-{unique}"
    events = helpers.interactions("a", 3000)
    shown = helpers.impressions("a", 800)
    dead_before = end_offsets(settings, DEAD_LETTERS.name)
    helpers.produce(settings, [*events, *shown], junk=7)

    with _sink(settings, group):
        helpers.wait_caught_up(settings, group)
    assert helpers.stored_interactions(settings, "a") == helpers.expected_interactions(events)
    assert helpers.stored_impressions(settings, "a") == len(shown)

    letters = [
        json.loads(v)
        for _, v in read_range(
            settings, DEAD_LETTERS.name, dead_before, end_offsets(settings, DEAD_LETTERS.name)
        )
    ]
    mine = [d for d in letters if d["processor"] == NAME]
    assert len(mine) == 7 and all(d["reason"] for d in mine)

    # Replay: the same events produced again, read by a second group from the very start
    # (each event reaches the sink twice; the rows must not change).
    helpers.produce(settings, [*events, *shown])
    with _sink(settings, f"{group}-again"):
        helpers.wait_caught_up(settings, f"{group}-again")
    assert helpers.stored_interactions(settings, "a") == helpers.expected_interactions(events)
    assert helpers.stored_impressions(settings, "a") == len(shown)


def test_crash_between_insert_and_commit_loses_and_duplicates_nothing(isolated_stack, unique):
    settings = isolated_stack
    group = f"t-crash-{unique}"
    helpers.commit_end_offsets(settings, group)  # the group starts after what is there
    events = helpers.interactions("b", 2500)
    helpers.produce(settings, events)

    crashing = _sink(settings, group, faults={"sink_exit_after_insert": 1}, batch_size=1000).start()
    wait_for(lambda: not crashing.alive(), 60, "the sink to crash after its first insert")
    assert crashing.proc.returncode == 99
    assert helpers.lag_of(settings, group) == len(events)  # nothing was committed
    raw_count, _ = helpers.stored_interactions(settings, "b", final=False)
    assert 0 < raw_count <= 1000  # ... but the first batch was inserted

    with _sink(settings, group, batch_size=1000):
        helpers.wait_caught_up(settings, group)
    assert helpers.stored_interactions(settings, "b") == helpers.expected_interactions(events)
    raw_after, _ = helpers.stored_interactions(settings, "b", final=False)
    # The redelivered batch was inserted twice (unless a background merge already collapsed
    # it); FINAL counts it once either way.
    assert len(events) <= raw_after <= len(events) + raw_count
