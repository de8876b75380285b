"""The table reader against the real broker: bounds taken at start, compacted tables,
transaction markers below the bound, timeouts and unknown topics."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Producer

from streamrec.infra.settings import Settings
from streamrec.streams import codecs
from streamrec.streams.admin import TopicManager
from streamrec.streams.errors import TopicReadError, TopicReadTimeout
from streamrec.streams.table_reader import TopicReader, read_table
from streamrec.topics import CATALOG_ITEMS, CatalogItem, TopicSpec
from tests.kafka_helpers import wait_for


def _topic(settings: Settings, partitions: int = 2) -> TopicSpec:
    """A compacted topic of this test's own, with catalog.items' contract."""
    spec = CATALOG_ITEMS.model_copy(
        update={"name": f"t-table-{uuid.uuid4().hex[:8]}", "partitions": partitions}
    )
    TopicManager(settings, specs=(spec,)).apply()
    return spec


def _item(item_id: str, title: str) -> bytes:
    return codecs.encode(CATALOG_ITEMS, CatalogItem(item_id=item_id, title=title))


def _produce(settings: Settings, topic: str, records: list[tuple[bytes, bytes | None]]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 0})
    for key, value in records:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(10) == 0


def test_read_table_keeps_the_latest_value_per_key_and_counts_malformed(stack: Settings) -> None:
    spec = _topic(stack)
    _produce(
        stack,
        spec.name,
        [
            (b"i1", _item("i1", "old")),
            (b"i2", _item("i2", "two")),
            (b"i3", _item("i3", "three")),
            (b"i1", _item("i1", "new")),
            (b"i2", None),  # tombstone
            (b"i4", b"{not json"),
        ],
    )
    table = read_table(stack.kafka_bootstrap, spec, timeout_s=30)
    assert {k: v.title for k, v in table.rows.items()} == {"i1": "new", "i3": "three"}
    assert table.skipped == 1


def test_read_to_end_stops_at_the_offsets_taken_at_start(stack: Settings) -> None:
    spec = _topic(stack)
    _produce(stack, spec.name, [(f"i{n}".encode(), _item(f"i{n}", "x")) for n in range(20)])
    with TopicReader(stack.kafka_bootstrap, spec) as reader:
        assert sum(reader.bounds.values()) == 20
        _produce(stack, spec.name, [(b"late", _item("late", "after the start"))])
        keys = [m.key() for batch in reader.read_to_end(timeout_s=30) for m in batch]
    assert len(keys) == 20
    assert b"late" not in keys


def test_a_follower_catches_up_and_then_sees_newer_messages(stack: Settings) -> None:
    spec = _topic(stack, partitions=1)
    _produce(stack, spec.name, [(b"i1", _item("i1", "x"))])
    with TopicReader(stack.kafka_bootstrap, spec) as reader:
        seen = [m.key() for batch in reader.catch_up(timeout_s=30) for m in batch]
        assert reader.caught_up
        assert seen == [b"i1"]
        _produce(stack, spec.name, [(b"i2", _item("i2", "y"))])
        for _ in range(60):  # each poll waits up to 0.5 s for a message
            seen += [m.key() for m in reader.poll(timeout_s=0.5)]
            if b"i2" in seen:
                break
    assert seen == [b"i1", b"i2"]


def test_a_transaction_marker_just_below_the_bound_does_not_stall_the_read(
    stack: Settings,
) -> None:
    # The commit marker takes the last offset: no message is ever delivered at `end - 1`.
    spec = _topic(stack, partitions=1)
    producer = Producer(
        {
            "bootstrap.servers": stack.kafka_bootstrap,
            "transactional.id": f"t-table-{uuid.uuid4().hex[:8]}",
        }
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    for n in range(3):
        producer.produce(spec.name, key=f"i{n}".encode(), value=_item(f"i{n}", "x"))
    producer.commit_transaction(30)

    def bounds() -> dict[int, int]:
        with TopicReader(stack.kafka_bootstrap, spec) as reader:
            return reader.bounds

    # The coordinator writes the commit marker after commit_transaction returns: the topic's
    # end moves to 4 once the marker is in.
    wait_for(lambda: bounds() == {0: 4}, timeout_s=30, what="the commit marker written")
    with TopicReader(stack.kafka_bootstrap, spec) as reader:
        assert reader.bounds == {0: 4}
        keys = [m.key() for batch in reader.read_to_end(timeout_s=20) for m in batch]
    assert keys == [b"i0", b"i1", b"i2"]


def test_a_bound_never_reached_times_out_naming_the_partition(stack: Settings) -> None:
    spec = _topic(stack, partitions=1)
    _produce(stack, spec.name, [(b"i1", _item("i1", "x"))])
    with (
        TopicReader(stack.kafka_bootstrap, spec, until={0: 50}) as reader,
        pytest.raises(TopicReadTimeout, match=r"partition 0 at 1 of 50"),
    ):
        for _ in reader.read_to_end(timeout_s=2):
            pass


def test_an_unknown_topic_is_a_clear_error(stack: Settings) -> None:
    with pytest.raises(TopicReadError, match="t-missing"):
        TopicReader(stack.kafka_bootstrap, f"t-missing-{uuid.uuid4().hex[:8]}")
