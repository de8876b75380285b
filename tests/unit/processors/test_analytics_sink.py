"""The analytics sink's loop with in-memory tables, consumer and dead-letter outbox: which
rows are inserted as which blocks, what is dead-lettered, and when offsets are committed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from streamrec.analytics import schema
from streamrec.analytics.errors import QueryError, SinkStuck
from streamrec.infra.settings import AnalyticsSettings
from streamrec.processors.analytics_sink import AnalyticsSink
from streamrec.streams import codecs, metrics
from streamrec.streams.errors import DeliveryError
from streamrec.topics import (
    CATALOG_ITEMS,
    EVENTS_INTERACTIONS,
    CatalogItem,
    DeadLetter,
    Interaction,
    TopicSpec,
)

TS = datetime(2026, 3, 1, 12, tzinfo=UTC)


class Tables:
    def __init__(self, log: list[str], failures: int = 0) -> None:
        self.blocks: list[tuple[str, list[list[Any]]]] = []
        self.failures = failures
        self.closed = False
        self.log = log

    def insert(self, table: str, rows: list[list[Any]]) -> None:
        if self.failures:
            self.failures -= 1
            raise QueryError(f"insert into {table} failed: chDB busy")
        self.log.append(f"insert {table} {len(rows)}")
        self.blocks.append((table, list(rows)))

    def close(self) -> None:
        self.closed = True


class Consumer:
    """Hands out scripted consume results; records subscriptions and commits."""

    def __init__(self, log: list[str]) -> None:
        self.script: list[list[Message]] = []
        self.commits: list[dict[tuple[str, int], int]] = []
        self.fail_commit = False
        self.on_revoke: Callable[..., None] | None = None
        self.subscribed: list[str] = []
        self.closed = False
        self.stop_when_empty: Callable[[], None] | None = None
        self.log = log

    def subscribe(self, topics: list[str], *, on_revoke: Callable[..., None]) -> None:
        self.subscribed, self.on_revoke = list(topics), on_revoke

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        if not self.script:
            if self.stop_when_empty is not None:
                self.stop_when_empty()
            return []
        batch = self.script.pop(0)
        assert len(batch) <= num_messages
        return batch

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> None:
        assert asynchronous is False
        if self.fail_commit:
            raise KafkaException(KafkaError(KafkaError.REQUEST_TIMED_OUT))
        self.log.append("commit")
        self.commits.append({(tp.topic, tp.partition): tp.offset for tp in offsets})

    def close(self) -> None:
        self.closed = True


class Outbox:
    def __init__(self, log: list[str], fail: bool = False) -> None:
        self.letters: list[DeadLetter] = []
        self.fail = fail
        self.closed = False
        self.log = log

    def send(self, letter: DeadLetter) -> None:
        self.letters.append(letter)

    def settle(self) -> None:
        if self.fail:
            raise DeliveryError("1 messages not delivered: broker down")
        self.log.append(f"settle {len(self.letters)}")

    def close(self) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class World:
    def __init__(self, batch_size: int = 3, failures: int = 0, **kw: Any) -> None:
        self.log: list[str] = []
        self.tables = Tables(self.log, failures)
        self.consumer = Consumer(self.log)
        self.outbox = Outbox(self.log, kw.pop("fail_letters", False))
        self.clock = Clock()
        self.slept: list[float] = []
        cfg = AnalyticsSettings(batch_size=batch_size, batch_max_wait_s=2.0)
        self.sink = AnalyticsSink(
            cfg,
            self.tables,
            self.consumer,
            self.outbox,
            clock=self.clock,
            sleep=self.slept.append,
            **kw,
        )
        self.offsets: dict[tuple[str, int], int] = {}

    def message(self, spec: TopicSpec, value: bytes | None, partition: int = 0) -> Message:
        offset = self.offsets.get((spec.name, partition), 10)
        self.offsets[(spec.name, partition)] = offset + 1
        return Message(
            topic=spec.name, partition=partition, offset=offset, key=b"k", value=value, error=None
        )

    def interaction(self, n: int, partition: int = 0) -> Message:
        event = Interaction(event_id=f"e{n}", user_id="u", item_id=f"i{n}", ts=TS)
        return self.message(
            EVENTS_INTERACTIONS, codecs.encode(EVENTS_INTERACTIONS, event), partition
        )

    def item(self, item_id: str) -> Message:
        event = CatalogItem(item_id=item_id, title=item_id, updated_at=TS)
        return self.message(CATALOG_ITEMS, codecs.encode(CATALOG_ITEMS, event))

    def feed(self, *messages: Message) -> None:
        self.consumer.script.append(list(messages))
        self.sink.poll()


def test_a_full_batch_is_inserted_one_block_per_table_then_committed():
    w = World(batch_size=3)
    w.feed(w.interaction(1, partition=0), w.item("m1"))
    assert w.tables.blocks == [] and w.consumer.commits == []  # not full, not due
    w.feed(w.interaction(2, partition=4))
    assert [(t, len(rows)) for t, rows in w.tables.blocks] == [
        (schema.INTERACTIONS, 2),
        (schema.CATALOG, 1),
    ]
    interactions = dict(w.tables.blocks)[schema.INTERACTIONS]
    assert [r[0] for r in interactions] == ["e1", "e2"]
    assert dict(w.tables.blocks)[schema.CATALOG][0][:3] == ["m1", 0, "m1"]
    assert w.consumer.commits == [
        {("events.interactions", 0): 11, ("catalog.items", 0): 11, ("events.interactions", 4): 11}
    ]
    assert w.sink.inserted == 3 and w.sink.batches == 1
    assert w.log == ["insert interactions 2", "insert catalog 1", "commit"]


def test_a_partial_batch_is_flushed_when_its_first_row_is_old_enough():
    w = World(batch_size=100)
    w.feed(w.interaction(1))
    w.clock.t += 1.9
    w.feed(w.interaction(2))
    assert w.consumer.commits == []
    w.clock.t += 0.2  # 2.1 s after the first row
    w.feed()
    assert w.consumer.commits == [{("events.interactions", 0): 12}]
    assert w.sink.inserted == 2


def test_malformed_messages_are_dead_lettered_durably_before_their_offsets_commit():
    w = World(batch_size=3)
    w.feed(
        w.message(EVENTS_INTERACTIONS, b"not json", partition=2),
        w.interaction(1),
        w.message(CATALOG_ITEMS, b'{"item_id": "x", "year": 12}'),
    )
    assert [(d.source_topic, d.partition, d.offset) for d in w.outbox.letters] == [
        ("events.interactions", 2, 10),
        ("catalog.items", 0, 10),
    ]
    assert {d.processor for d in w.outbox.letters} == {"analytics-sink"}
    assert w.log == ["insert interactions 1", "settle 2", "commit"]
    assert w.consumer.commits[0][("events.interactions", 2)] == 11  # skipped, not redone
    assert w.sink.inserted == 1


def test_an_undeliverable_dead_letter_leaves_the_batch_uncommitted():
    w = World(batch_size=1, fail_letters=True)
    with pytest.raises(DeliveryError):
        w.feed(w.message(EVENTS_INTERACTIONS, b"{}"))
    assert w.consumer.commits == []


def test_a_failed_insert_is_retried_with_backoff_and_committed_once_it_succeeds():
    w = World(batch_size=1, failures=3)
    w.feed(w.interaction(1))
    assert w.slept == [0.2, 0.4, 0.8]
    assert len(w.tables.blocks) == 1 and len(w.consumer.commits) == 1


def test_when_stopping_three_failed_inserts_give_up_without_a_commit():
    w = World(batch_size=10, failures=5)
    w.feed(w.interaction(1))
    w.sink.stop()
    with pytest.raises(QueryError):
        w.sink.flush()
    assert w.slept == [0.2, 0.4] and w.consumer.commits == []


def test_a_failed_commit_is_covered_by_the_next_batchs_commit():
    w = World(batch_size=1)
    w.consumer.fail_commit = True
    w.feed(w.interaction(1))
    assert w.consumer.commits == [] and w.sink.batches == 1
    w.consumer.fail_commit = False
    w.feed(w.interaction(2))
    assert w.consumer.commits == [{("events.interactions", 0): 12}]
    assert [r[0] for _, rows in w.tables.blocks for r in rows] == ["e1", "e2"]


def test_consumer_errors_are_skipped_without_an_offset():
    w = World(batch_size=1)
    error = Message(topic="events.interactions", error=KafkaError(KafkaError._TRANSPORT))
    w.feed(error)
    assert w.tables.blocks == [] and w.consumer.commits == [] and w.outbox.letters == []


def test_a_revoke_inserts_and_commits_what_is_held():
    w = World(batch_size=100)
    w.feed(w.interaction(1))
    assert w.consumer.on_revoke is None  # subscribed by `run`
    w.sink._on_revoke(w.consumer, [TopicPartition("events.interactions", 0)])
    assert w.consumer.commits == [{("events.interactions", 0): 11}]
    w.sink.flush()  # nothing held: no empty commit
    assert len(w.consumer.commits) == 1


def test_run_subscribes_drains_flushes_on_stop_and_closes_every_port():
    w = World(batch_size=100)
    w.consumer.script = [[w.interaction(1)], [w.item("m1")]]
    w.consumer.stop_when_empty = w.sink.stop
    w.sink.run()
    assert sorted(w.consumer.subscribed) == sorted(
        ["events.interactions", "recs.served", "catalog.items"]
    )
    assert w.consumer.on_revoke is not None
    assert w.consumer.commits == [{("events.interactions", 0): 11, ("catalog.items", 0): 11}]
    assert w.consumer.closed and w.outbox.closed and w.tables.closed


def test_bad_messages_inside_a_batch_of_interactions_are_dead_lettered_one_by_one():
    w = World(batch_size=6)
    bad_ts = orjson.dumps({"event_id": "x", "user_id": "u", "item_id": "i", "ts": "2026-02-30"})
    w.feed(
        w.interaction(1, partition=1),
        w.message(EVENTS_INTERACTIONS, b"{truncated", partition=1),
        w.interaction(2, partition=1),
        w.message(EVENTS_INTERACTIONS, bad_ts, partition=1),
        w.message(EVENTS_INTERACTIONS, None, partition=1),
        w.interaction(3, partition=1),
    )
    letters = [(d.offset, d.reason) for d in w.outbox.letters]
    assert [offset for offset, _ in letters] == [11, 13, 14]
    assert "Invalid JSON" in letters[0][1]
    assert letters[1][1].startswith("ts: ") and "tombstone" in letters[2][1]
    assert sorted(r[0] for _, rows in w.tables.blocks for r in rows) == ["e1", "e2", "e3"]
    assert w.log == ["insert interactions 3", "settle 3", "commit"]
    assert w.consumer.commits == [{("events.interactions", 1): 16}]


@pytest.fixture
def readiness():
    metrics.READINESS.reset()
    yield metrics.READINESS
    metrics.READINESS.reset()


def _passing_time(w: World) -> None:
    def sleep(delay: float) -> None:
        w.slept.append(delay)
        w.clock.t += delay

    w.sink.sleep = sleep


def test_inserts_failing_past_the_bound_mark_stuck_then_give_up_uncommitted(readiness):
    w = World(batch_size=1, failures=10**6)
    _passing_time(w)
    with pytest.raises(SinkStuck, match="inserts failing for 12"):
        w.feed(w.interaction(1))
    assert w.consumer.commits == [] and w.tables.blocks == []
    assert not readiness.ready and "inserts failing for" in (readiness.reason or "")
    assert "chDB busy" in (readiness.reason or "")
    # Bounded: about give_up_s (120 s) of backoff, not an endless retry.
    assert 110 <= sum(w.slept) <= 131


def test_a_store_that_comes_back_after_being_stuck_makes_the_worker_ready_again(readiness):
    w = World(batch_size=1, failures=9)  # 0.2 + 0.4 + ... + 10 s: 42.6 s of failures
    _passing_time(w)
    marked: list[str | None] = []
    readiness.listen(lambda: marked.append(readiness.reason))
    w.feed(w.interaction(1))
    assert len(marked) == 1 and "inserts failing for 3" in (marked[0] or "")  # past 30 s
    assert len(w.consumer.commits) == 1 and len(w.tables.blocks) == 1
    assert readiness.ready
