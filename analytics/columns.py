"""Interactions decoded a batch at a time into a columnar block for one Arrow insert.

The sink's hot table is `interactions`. Instead of one pydantic model and one Python row per
message, a batch is parsed with orjson and checked column by column against what
`topics.Interaction` accepts in its plain form: the known fields only, ids of 1-128
characters, a kind of the schema, a rating in [0, 10], a UTC time in ISO 8601 (`Z`,
`+00:00` or no zone). A message that is not plainly valid in that sense goes through the
schema itself, one by one (`Decoder`), which either accepts it (an offset time, an epoch
number...) or dead-letters it with its reason: the fast path only ever accepts what the
schema accepts, and the values it stores are the ones the schema would give.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from streamrec.analytics import schema
from streamrec.streams.columnar import plain_columns, plain_interaction
from streamrec.topics import Interaction

_ALL = tuple(Interaction.model_fields)
_DEFAULT_KIND = Interaction.model_fields["kind"].default
_DEFAULT_SOURCE = Interaction.model_fields["source"].default
# The time forms whose meaning is plain: second precision or up to microseconds, UTC.
_TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|\+00:00)?")
_ZONE = re.compile(r"(?:Z|\+00:00)$")

ARROW_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("kind", pa.string()),
        ("rating", pa.float32()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("source", pa.string()),
    ]
)
assert tuple(ARROW_SCHEMA.names) == schema.COLUMNS[schema.INTERACTIONS]


class ColumnBlock(Sequence[list[Any]]):
    """Rows of `interactions` held as Arrow columns; a sequence of rows to whoever reads it
    row by row (the same rows `schema.interaction_row` makes)."""

    def __init__(self) -> None:
        self._parts: list[pa.Table] = []
        self._n = 0

    def add(self, part: pa.Table) -> None:
        if part.num_rows:
            self._parts.append(part)
            self._n += part.num_rows

    def table(self) -> pa.Table:
        if not self._parts:
            return ARROW_SCHEMA.empty_table()
        return pa.concat_tables(self._parts) if len(self._parts) > 1 else self._parts[0]

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[list[Any]]:
        return iter(_rows(self.table()))

    def __getitem__(self, i: int | slice) -> Any:  # a row, or a list of rows for a slice
        if isinstance(i, slice):
            start, stop, step = i.indices(self._n)
            rows = _rows(self.table().slice(start, max(0, stop - start)))
            return rows[::step]
        if not -self._n <= i < self._n:
            raise IndexError(i)
        return _rows(self.table().slice(i % self._n, 1))[0]


def _rows(table: pa.Table) -> list[list[Any]]:
    out = []
    for row in table.to_pylist():
        ts = row["ts"].astimezone(UTC).replace(tzinfo=None)
        out.append([*(row[c] for c in ARROW_SCHEMA.names[:5]), ts, row["source"]])
    return out


def _utc_micros(texts: pa.Array) -> tuple[pa.Array, list[int]]:
    """The times as Arrow timestamps, and the positions Arrow could not read (an invalid
    date such as Feb 30): those go to the schema."""
    naive = pc.replace_substring_regex(texts, _ZONE.pattern, "")
    try:
        return naive.cast(pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC")), []
    except pa.ArrowInvalid:
        bad, good = [], []
        for i, t in enumerate(texts.to_pylist()):
            try:
                datetime.fromisoformat(t)
                good.append(i)
            except ValueError:
                bad.append(i)
        keep = naive.take(pa.array(good, pa.int64())).cast(pa.timestamp("us"))
        out = np.zeros(len(texts), dtype="datetime64[us]")
        out[good] = keep.to_numpy(zero_copy_only=False)
        return pa.array(out).cast(pa.timestamp("us", tz="UTC")), bad


def decode_interactions(
    values: list[bytes | None], by_schema: Callable[[int], Interaction | None]
) -> pa.Table:
    """One batch of events.interactions values as an Arrow table of `interactions` rows.

    `by_schema(i)` decodes value `i` through the schema (dead-lettering it when it fails);
    it is called for each value the columnar path does not vouch for."""
    parsed: list[Any] = []
    for v in values:
        try:
            parsed.append(orjson.loads(v) if v is not None else None)
        except orjson.JSONDecodeError:
            parsed.append(None)
    cols = plain_columns(parsed) if parsed else None
    if cols is not None:
        c = dict(zip(_ALL, cols, strict=True))
        plain = list(range(len(parsed)))
        columns = [c["event_id"], c["user_id"], c["item_id"], c["kind"], c["rating"], c["source"]]
        ts_text = pa.array(c["ts"], pa.string())
    else:
        plain = [i for i, d in enumerate(parsed) if plain_interaction(d)]
        rows = [parsed[i] for i in plain]
        columns = [
            [d["event_id"] for d in rows],
            [d["user_id"] for d in rows],
            [d["item_id"] for d in rows],
            [d.get("kind", _DEFAULT_KIND) for d in rows],
            [d.get("rating") for d in rows],
            [d.get("source", _DEFAULT_SOURCE) for d in rows],
        ]
        ts_text = pa.array([d["ts"] for d in rows], pa.string())
    # The time's shape, for the whole batch at once (RE2 in Arrow).
    shaped = pc.match_substring_regex(ts_text, f"^{_TS.pattern}$").to_numpy(zero_copy_only=False)
    keep = np.flatnonzero(shaped)
    if len(keep) < len(plain):
        plain = [plain[k] for k in keep.tolist()]
        take = pa.array(keep, pa.int64())
        columns = [pa.array(col).take(take) if len(col) else col for col in columns]
        ts_text = ts_text.take(take)
    ts, unreadable = _utc_micros(ts_text)
    if unreadable:
        drop = set(unreadable)
        kept = [k for k in range(len(plain)) if k not in drop]
        take = pa.array(kept, pa.int64())
        ts = ts.take(take)
        plain = [plain[k] for k in kept]
        columns = [pa.array(col).take(take) if len(col) else col for col in columns]
    event_id, user_id, item_id, kind, rating, source = columns
    fast = pa.Table.from_arrays(
        [
            pa.array(event_id, pa.string()),
            pa.array(user_id, pa.string()),
            pa.array(item_id, pa.string()),
            pa.array(kind, pa.string()),
            pa.array(rating, pa.float64()).cast(pa.float32()),
            ts,
            pa.array(source, pa.string()),
        ],
        schema=ARROW_SCHEMA,
    )
    if len(plain) == len(values):
        return fast
    chosen = set(plain)
    others = [e for i in range(len(values)) if i not in chosen and (e := by_schema(i))]
    if not others:
        return fast
    return pa.concat_tables([fast, from_events(others)])


def from_events(events: list[Interaction]) -> pa.Table:
    """Validated events as an Arrow table of `interactions` rows."""
    return pa.Table.from_arrays(
        [
            pa.array([e.event_id for e in events], pa.string()),
            pa.array([e.user_id for e in events], pa.string()),
            pa.array([e.item_id for e in events], pa.string()),
            pa.array([e.kind for e in events], pa.string()),
            pa.array([e.rating for e in events], pa.float64()).cast(pa.float32()),
            pa.array([e.ts for e in events], pa.timestamp("us", tz="UTC")),
            pa.array([e.source for e in events], pa.string()),
        ],
        schema=ARROW_SCHEMA,
    )
