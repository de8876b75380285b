"""The columnar decode of interactions accepts only what the schema accepts, with its values."""

from datetime import UTC, datetime

import orjson
import pytest

from streamrec.analytics import schema
from streamrec.analytics.columns import ColumnBlock, decode_interactions, from_events
from streamrec.streams import codecs
from streamrec.topics import EVENTS_INTERACTIONS, Interaction
from streamrec.topics.errors import SchemaError

BASE = {"event_id": "e", "user_id": "u", "item_id": "i", "ts": "2026-03-01T12:00:00Z"}
CASES = [
    {},
    {"kind": "click", "rating": 4, "source": "web", "schema_version": 1},
    {"rating": 0},
    {"rating": 10.0},
    {"rating": 2.25},
    {"rating": None},
    {"ts": "2026-03-01T12:00:00.123456Z"},
    {"ts": "2026-03-01T12:00:00.5"},  # no zone: UTC
    {"ts": "2026-03-01T12:00:00+00:00"},
    {"ts": "2026-03-01T14:00:00+02:00"},  # through the schema, converted to UTC
    {"ts": 1772366400},  # epoch seconds: through the schema
    {"ts": "2026-02-30T12:00:00Z"},  # no such day
    {"ts": "2026-03-01T24:00:00Z"},
    {"ts": "2026-03-01T12:00:60Z"},
    {"ts": "2026-03-01 12:00:00Z"},
    {"ts": "yesterday"},
    {"rating": 11},
    {"rating": -0.5},
    {"rating": True},
    {"rating": "3"},
    {"kind": "teleport"},
    {"kind": None},
    {"schema_version": 2},
    {"schema_version": True},
    {"user_id": ""},
    {"user_id": "x" * 128},
    {"user_id": "x" * 129},
    {"item_id": 7},
    {"event_id": "é" * 128},
    {"source": "s" * 65},
    {"extra": 1},
]


def _values() -> list[bytes | None]:
    out: list[bytes | None] = []
    for i, case in enumerate(CASES):
        obj = {**BASE, "event_id": f"e{i}", **case}
        if case.get("event_id"):
            obj["event_id"] = case["event_id"]
        out.append(orjson.dumps(obj))
    return [*out, b"not json", None, b"[1, 2]", b'{"event_id": "a"},{"event_id": "b"}']


def _by_schema(values):
    def decode(i: int) -> Interaction | None:
        try:
            return codecs.decode(EVENTS_INTERACTIONS, values[i])  # type: ignore[return-value]
        except SchemaError:
            return None

    return decode


def test_the_columnar_rows_are_the_schemas_rows():
    values = _values()
    expected = sorted(
        (schema.interaction_row(e) for i in range(len(values)) if (e := _by_schema(values)(i))),
        key=lambda r: r[0],
    )
    called: list[int] = []

    def by_schema(i: int) -> Interaction | None:
        called.append(i)
        return _by_schema(values)(i)

    block = ColumnBlock()
    block.add(decode_interactions(values, by_schema))
    assert sorted(block, key=lambda r: r[0]) == expected
    assert len(expected) < len(values) - 10  # the cases do test refusals
    assert called == sorted(called)  # one by one, in the batch's order (dead letters keep it)
    assert 9 in called and 10 in called and 0 not in called  # offset and epoch: the schema


@pytest.mark.parametrize("n", [0, 1, 500])
def test_a_batch_of_plain_events_never_needs_the_schema(n):
    events = [
        Interaction(
            event_id=f"e{i}", user_id=f"u{i}", item_id="i", ts=datetime(2026, 1, 1, tzinfo=UTC)
        )
        for i in range(n)
    ]
    values = [codecs.encode(EVENTS_INTERACTIONS, e) for e in events]
    table = decode_interactions(values, lambda i: pytest.fail(f"value {i} went to the schema"))
    assert table.equals(from_events(events))


FULL = {"schema_version": 1, "kind": "view", "rating": None, "source": "app", **BASE}


@pytest.mark.parametrize(
    "change",
    [
        {"rating": 11},
        {"rating": True},
        {"kind": "teleport"},
        {"schema_version": 2},
        {"source": None},
        {"user_id": "x" * 129},
        {"ts": "2026-02-30T12:00:00Z"},
        {"ts": "2026-03-01T14:00:00+02:00"},
        {"ts": 1772366400},
    ],
)
def test_one_odd_value_in_a_batch_of_full_objects_goes_to_the_schema_alone(change):
    values = [orjson.dumps({**FULL, "event_id": f"g{i}"}) for i in range(5)]
    values.insert(2, orjson.dumps({**FULL, "event_id": "odd", **change}))
    called: list[int] = []

    def by_schema(i: int) -> Interaction | None:
        called.append(i)
        return _by_schema(values)(i)

    block = ColumnBlock()
    block.add(decode_interactions(values, by_schema))
    expected = [schema.interaction_row(e) for i in range(6) if (e := _by_schema(values)(i))]
    assert sorted(block, key=lambda r: r[0]) == sorted(expected, key=lambda r: r[0])
    assert called == [2]


def test_a_block_reads_as_the_sequence_of_its_rows():
    events = [
        Interaction(event_id=f"e{i}", user_id="u", item_id="i", ts=datetime(2026, 1, 1, tzinfo=UTC))
        for i in range(5)
    ]
    block = ColumnBlock()
    block.add(from_events(events[:2]))
    block.add(from_events(events[2:]))
    rows = [schema.interaction_row(e) for e in events]
    assert len(block) == 5 and list(block) == rows
    assert block[1] == rows[1] and block[-1] == rows[-1] and block[1:4] == rows[1:4]
    with pytest.raises(IndexError):
        block[5]
