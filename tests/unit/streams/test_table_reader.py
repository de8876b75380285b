"""The table reader's bookkeeping and decoding, without a broker."""

from __future__ import annotations

from confluent_kafka import Message

from streamrec.streams import codecs
from streamrec.streams.table_reader import Decoder, ReadProgress, apply_changes
from streamrec.topics import CATALOG_ITEMS, EVENTS_INTERACTIONS, CatalogItem


def _msg(key: bytes | None, value: bytes | None, offset: int = 0) -> Message:
    return Message(topic=CATALOG_ITEMS.name, partition=0, offset=offset, key=key, value=value)


def _item(item_id: str, title: str = "A film") -> bytes:
    return codecs.encode(CATALOG_ITEMS, CatalogItem(item_id=item_id, title=title))


def test_a_partition_is_done_at_the_message_just_below_its_bound() -> None:
    progress = ReadProgress({0: 3, 1: 2})
    progress.saw(0, 1)
    progress.saw(1, 1)
    assert progress.pending == {0}
    assert not progress.done
    progress.saw(0, 2)
    assert progress.done


def test_empty_partitions_are_done_from_the_start() -> None:
    progress = ReadProgress({0: 0, 1: 5})
    assert progress.pending == {1}
    assert ReadProgress({0: 0}).done


def test_a_position_at_the_bound_ends_a_partition_whose_last_offsets_hold_no_message() -> None:
    # A compacted partition or a transaction marker: offset 9 is never delivered.
    progress = ReadProgress({0: 10})
    progress.saw(0, 7)
    assert not progress.done
    progress.reached(0, 10)
    assert progress.done


def test_messages_past_the_bound_are_outside_the_read() -> None:
    progress = ReadProgress({0: 3})
    assert progress.below(0, 2)
    assert not progress.below(0, 3)
    assert not progress.below(7, 0)  # a partition the read does not cover


def test_describe_names_the_partitions_left_behind() -> None:
    progress = ReadProgress({0: 10, 1: 4, 2: 0})
    progress.saw(0, 2)
    progress.saw(1, 3)
    assert progress.describe() == "partition 0 at 3 of 10"
    progress.reached(0, 2)  # a lower position never moves it back
    assert progress.describe() == "partition 0 at 3 of 10"


def test_decoder_turns_tombstones_of_a_compacted_topic_into_removals() -> None:
    decoder = Decoder(CATALOG_ITEMS)
    changes = decoder([_msg(b"i1", _item("i1")), _msg(b"i1", None, 1)])
    assert [(c.key, type(c.event).__name__) for c in changes] == [
        ("i1", "CatalogItem"),
        ("i1", "NoneType"),
    ]
    assert decoder.skipped == 0


def test_decoder_skips_and_counts_malformed_messages_and_reports_why() -> None:
    seen: list[tuple[int, str]] = []
    decoder = Decoder(CATALOG_ITEMS, on_malformed=lambda m, why: seen.append((m.offset(), why)))
    changes = decoder(
        [_msg(b"i1", b"not json", 0), _msg(None, None, 1), _msg(b"i2", _item("i2"), 2)]
    )
    assert [c.key for c in changes] == ["i2"]
    assert decoder.skipped == 2
    assert [offset for offset, _ in seen] == [0, 1]
    assert seen[1][1] == "tombstone without a key"


def test_a_tombstone_on_a_topic_that_is_not_compacted_is_malformed() -> None:
    decoder = Decoder(EVENTS_INTERACTIONS)
    assert decoder([_msg(b"u1", None)]) == []
    assert decoder.skipped == 1
    assert "tombstone" in decoder.last_reason


def test_the_table_keeps_the_latest_value_per_key_and_drops_removed_keys() -> None:
    decoder = Decoder(CATALOG_ITEMS)
    rows: dict = {}
    apply_changes(
        rows,
        decoder(
            [
                _msg(b"i1", _item("i1", "old"), 0),
                _msg(b"i2", _item("i2"), 1),
                _msg(b"i1", _item("i1", "new"), 2),
                _msg(b"i2", None, 3),
            ]
        ),
    )
    assert list(rows) == ["i1"]
    assert rows["i1"].title == "new"
