"""Producing analytics events and reading them back, for the analytics tests."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta

from streamrec.analytics.store import store_session
from streamrec.infra.settings import Settings
from streamrec.streams.lag import admin_client, consumer_lags
from streamrec.streams.producer import DeliveryTracker, bulk_producer, flush, produce_event
from streamrec.topics import EVENTS_INTERACTIONS, RECS_SERVED, Impression, Interaction
from tests import kafka_helpers
from tests.kafka_helpers import wait_for

SINK_TOPICS = [EVENTS_INTERACTIONS.name, RECS_SERVED.name]


def interactions(prefix: str, n: int, start: datetime | None = None) -> list[Interaction]:
    start = start or datetime(2026, 1, 1, tzinfo=UTC)
    kinds = ("view", "click", "watch", "rating", "skip")
    return [
        Interaction(
            event_id=f"{prefix}-i{i}",
            user_id=f"{prefix}-u{i % 37}",
            item_id=f"it{i % 101}",
            kind=kinds[i % len(kinds)],
            rating=float(i % 5) if kinds[i % len(kinds)] == "rating" else None,
            ts=start + timedelta(seconds=i),
        )
        for i in range(n)
    ]


def impressions(prefix: str, n: int) -> list[Impression]:
    return [
        Impression(
            event_id=f"{prefix}-m{i}",
            request_id=f"{prefix}-r{i}",
            user_id=f"{prefix}-u{i % 37}",
            item_ids=[f"it{(i + k) % 101}" for k in range(3)],
            level="FULL",
            latency_ms=float(i % 50),
        )
        for i in range(n)
    ]


def produce(settings: Settings, events: list[Interaction | Impression], junk: int = 0) -> None:
    producer = bulk_producer(settings)
    tracker = DeliveryTracker()
    for e in events:
        spec = EVENTS_INTERACTIONS if isinstance(e, Interaction) else RECS_SERVED
        produce_event(producer, spec, e, tracker)
    for i in range(junk):
        producer.produce(EVENTS_INTERACTIONS.name, value=b'{"not": "an interaction %d"}' % i)
    flush(producer)
    tracker.raise_if_failed()


def checksum(rows: list[tuple[str, ...]]) -> int:
    """Order-independent checksum, computed the same way in ClickHouse (sum of CRC32)."""
    return sum(zlib.crc32("|".join(r).encode()) for r in rows)


def expected_interactions(events: list[Interaction]) -> tuple[int, int]:
    return len(events), checksum([(e.event_id, e.user_id, e.item_id, e.kind) for e in events])


def stored_interactions(settings: Settings, prefix: str, final: bool = True) -> tuple[int, int]:
    db = settings.clickhouse.database
    with store_session(settings) as client:
        row = client.query(
            f"SELECT count(), sum(CRC32(concat(event_id, '|', user_id, '|', item_id, '|', kind)))"
            f" FROM {db}.interactions {'FINAL' if final else ''}"
            f" WHERE startsWith(event_id, '{prefix}-')"
        ).result_rows[0]
    return int(row[0]), int(row[1])


def stored_impressions(settings: Settings, prefix: str) -> int:
    db = settings.clickhouse.database
    with store_session(settings) as client:
        where = f"startsWith(event_id, '{prefix}-')"
        return int(client.command(f"SELECT count() FROM {db}.impressions FINAL WHERE {where}"))


def wait_caught_up(settings: Settings, group: str, timeout_s: float = 90.0) -> None:
    """Until `group` has committed everything on the sink's topics (lag 0 on every partition)."""
    admin = admin_client(settings)

    def done() -> bool:
        lags = consumer_lags(admin, groups=[group], topics=SINK_TOPICS)
        by_topic = lags.get(group)
        return by_topic is not None and sum(by_topic.values()) == 0

    wait_for(done, timeout_s, f"{group} to commit every offset", interval=0.5)


def lag_of(settings: Settings, group: str) -> int:
    lags = consumer_lags(admin_client(settings), groups=[group], topics=SINK_TOPICS)
    return sum(lags.get(group, {}).values())


def commit_end_offsets(settings: Settings, group: str) -> None:
    """Commit the current end of the sink's topics for `group` (it starts after them)."""
    kafka_helpers.commit_end_offsets(settings, group, *SINK_TOPICS)
