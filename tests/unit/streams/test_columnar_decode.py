"""The batch decode of interactions accepts only what the schema accepts, with its values."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from streamrec.features.session import ts_ms
from streamrec.streams import codecs
from streamrec.streams.columnar import decode_interaction_rows, interaction_row
from streamrec.topics import EVENTS_INTERACTIONS, Interaction
from streamrec.topics.errors import SchemaError

BASE = {"event_id": "e", "user_id": "u", "item_id": "i", "ts": "2026-03-01T12:00:00Z"}
FULL = {"schema_version": 1, "kind": "view", "rating": None, "source": "app", **BASE}
CASES = [
    {},
    {"kind": "click", "rating": 4, "source": "web", "schema_version": 1},
    {"rating": 0},
    {"rating": 10.0},
    {"rating": 2.25},
    {"rating": None},
    {"ts": "2026-03-01T12:00:00.123456Z"},
    {"ts": "2026-03-01T12:00:00.0005Z"},  # half a millisecond: the schema's rounding
    {"ts": "2026-03-01T12:00:00.5"},  # no zone: UTC
    {"ts": "2026-03-01T12:00:00+00:00"},
    {"ts": "2026-03-01T14:00:00+02:00"},  # through the schema, converted to UTC
    {"ts": 1772366400},  # epoch seconds: through the schema
    {"ts": "1969-12-31T23:59:59.9995Z"},  # before 1970
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
        out.append(orjson.dumps(obj))
    return [*out, b"not json", None, b"[1, 2]", b'{"event_id": "a"},{"event_id": "b"}', b'"x"']


def _schema_row(value: bytes | None):
    try:
        event = codecs.decode(EVENTS_INTERACTIONS, value)
    except SchemaError:
        return None
    assert isinstance(event, Interaction)
    return (event.event_id, event.user_id, event.item_id, event.rating, ts_ms(event.ts.timestamp()))


def _decode_like_a_processor(values):
    rows, by_schema = decode_interaction_rows(values)
    assert all(rows[i] is None for i in by_schema)
    assert by_schema == sorted(by_schema)  # in the batch's order (dead letters keep it)
    for i in by_schema:
        rows[i] = _schema_row(values[i])
    return rows, by_schema


def test_the_rows_are_the_schemas_rows_in_the_batchs_order():
    values = _values()
    rows, by_schema = _decode_like_a_processor(values)
    assert rows == [_schema_row(v) for v in values]
    assert sum(r is None for r in rows) > 10  # the cases do test refusals
    assert 0 not in by_schema and 10 in by_schema and 11 in by_schema  # offset, epoch: schema
    assert interaction_row(codecs.decode(EVENTS_INTERACTIONS, values[1])) == rows[1]


@pytest.mark.parametrize("n", [0, 1, 500])
def test_a_batch_of_plain_events_never_needs_the_schema(n):
    rnd = random.Random(n)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    events = [
        Interaction(
            event_id=f"e{i}",
            user_id=f"u{i % 7}",
            item_id="i",
            rating=rnd.choice([None, 1, 3.5, 10]),
            ts=t0 + timedelta(microseconds=rnd.randrange(10**13)),
        )
        for i in range(n)
    ]
    values = [codecs.encode(EVENTS_INTERACTIONS, e) for e in events]
    rows, by_schema = decode_interaction_rows(values)
    assert by_schema == []
    assert rows == [interaction_row(e) for e in events]
    assert [type(r[3]) for r in rows if r and r[3] is not None] == [
        float for e in events if e.rating is not None
    ]


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
    rows, by_schema = _decode_like_a_processor(values)
    assert by_schema == [2]
    assert rows == [_schema_row(v) for v in values]
