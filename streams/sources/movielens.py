"""MovieLens-100K (RecBole's atomic files) as interactions and catalog items."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
from pydantic import ValidationError

from streamrec.streams import codecs
from streamrec.streams.codecs import validation_reason
from streamrec.streams.columnar import encode_interactions, plain_ids
from streamrec.streams.sources.base import EncodedChunk, RowError, event_id_for
from streamrec.topics import EVENTS_INTERACTIONS, CatalogItem, Interaction

SOURCE = "ml-100k"

# MovieLens-100K's 19 genres, in the dataset's order (RecBole spells them as tokens).
GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)


class MovieLensInteractions:
    """The 100,000 ratings as `rating` interactions, in event-time order.

    Rows are ordered by (timestamp, line) so the stream follows event time; the event id
    comes from the line number in the file, so it does not depend on that order. Rows of the
    wrong shape are reported first, then the valid ones in event-time order.
    """

    name = SOURCE

    def __init__(self, directory: Path) -> None:
        self.path = directory / "ml-100k.inter"

    def __iter__(self) -> Iterator[Interaction | RowError]:
        """Row by row, as validated events (for callers that want the objects)."""
        for chunk_rows in self._rows():
            yield from chunk_rows.events()

    def chunks(self, size: int = 20_000) -> Iterator[EncodedChunk]:
        """The same rows in the same order, encoded for events.interactions a chunk at a
        time: the columnar path of replay (`streams/columnar.py`)."""
        for rows in self._rows(size):
            yield rows.encode()

    def _rows(self, size: int = 20_000) -> Iterator[_Rows]:
        raw = self.path.read_bytes()
        text = raw.decode("utf-8")  # a file that is not UTF-8 is refused, as read_text does
        if any(sep in text for sep in _OTHER_LINE_BREAKS):
            lines = text.splitlines()[1:]  # the rare file with other line breaks: by hand
            shape_errors, body = _split_lines(lines)
        else:
            shape_errors, body = _split_newlines(raw)
        if shape_errors:
            yield _Rows.errors_only(shape_errors)
        table = _read_columns(body.buf)
        line = body.line_numbers
        user, item, rating, ts_raw = (table[c].combine_chunks() for c in _COLUMNS)
        # The fast rows: plain ids, an integer rating 0-10 and epoch seconds of at most 10
        # digits (pydantic reads larger numbers as milliseconds). Every other row goes
        # through pd.to_numeric and the schema, as before.
        fast = plain_ids(user) & plain_ids(item) & _digits(rating, 2) & _digits(ts_raw, 10)
        ts_num = np.full(len(line), np.nan)
        rating_num = np.zeros(len(line))
        idx = np.flatnonzero(fast)
        ts_num[idx] = pc.cast(ts_raw.take(idx), pa.int64()).to_numpy()
        rating_num[idx] = pc.cast(rating.take(idx), pa.float64()).to_numpy()
        fast &= rating_num <= 10
        slow = np.flatnonzero(~fast)
        if len(slow):
            ts_num[slow] = pd.to_numeric(
                pd.Series(ts_raw.take(slow).to_pylist(), dtype=object), errors="coerce"
            ).to_numpy(dtype=float)
        # Event-time order, ties by line; rows without a number last (numpy sorts NaN last).
        order = np.lexsort((line, ts_num))
        cols = _Columns(user, item, rating, ts_raw, line, ts_num, rating_num, fast)
        for start in range(0, len(order), size):
            yield _Rows(cols, order[start : start + size])


_COLUMNS = ["user", "item", "rating", "timestamp"]
_OTHER_LINE_BREAKS = ("\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


@dataclass
class _Body:
    buf: bytes
    line_numbers: np.ndarray


def _shape_error(line_no: int, raw: str) -> RowError:
    n = raw.count("\t") + 1
    return RowError(line_no, f"expected 4 tab-separated fields, got {n}", raw)


def _split_lines(lines: list[str]) -> tuple[list[RowError], _Body]:
    good, numbers, errors = [], [], []
    for line_no, raw in enumerate(lines, start=2):
        if raw.count("\t") == 3:
            good.append(raw)
            numbers.append(line_no)
        else:
            errors.append(_shape_error(line_no, raw))
    return errors, _Body("\n".join(good).encode(), np.array(numbers, dtype=np.int64))


def _split_newlines(raw: bytes) -> tuple[list[RowError], _Body]:
    # Lines split on b"\n" alone; each tab counts for the line whose newline follows it.
    data = raw if raw.endswith(b"\n") else raw + b"\n"
    arr = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(arr == 10)
    line_of_tab = np.searchsorted(ends, np.flatnonzero(arr == 9))
    per_line = np.bincount(line_of_tab, minlength=len(ends))[1:]  # the header is line 1
    numbers = np.arange(2, 2 + len(per_line), dtype=np.int64)
    starts = ends[:-1] + 1
    bad = np.flatnonzero(per_line != 3)
    if not len(bad):
        return [], _Body(data[starts[0] :] if len(starts) else b"", numbers)
    errors = [
        _shape_error(int(numbers[b]), data[starts[b] : ends[b + 1]].decode("utf-8"))
        for b in bad.tolist()
    ]
    keep = np.flatnonzero(per_line == 3)
    body = b"".join(data[starts[k] : ends[k + 1] + 1] for k in keep.tolist())
    return errors, _Body(body, numbers[keep])


def _read_columns(buf: bytes) -> pa.Table:
    names = _COLUMNS
    if not buf:
        return pa.table({n: pa.array([], pa.string()) for n in names})
    return pcsv.read_csv(
        io.BytesIO(buf),
        read_options=pcsv.ReadOptions(column_names=names, use_threads=False),
        parse_options=pcsv.ParseOptions(
            delimiter="\t", quote_char=False, escape_char=False, ignore_empty_lines=False
        ),
        convert_options=pcsv.ConvertOptions(
            column_types={n: pa.string() for n in names},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )


def _digits(column: pa.Array, most: int) -> np.ndarray:
    ok = pc.ascii_is_decimal(column).to_numpy(zero_copy_only=False)
    return ok & (pc.binary_length(column).to_numpy(zero_copy_only=False) <= most)


@dataclass
class _Columns:
    user: pa.Array
    item: pa.Array
    rating: pa.Array
    ts_raw: pa.Array
    line: np.ndarray
    ts_num: np.ndarray
    rating_num: np.ndarray
    fast: np.ndarray


class _Rows:
    """One chunk of rows in event-time order: as events, or encoded as a whole."""

    def __init__(
        self, cols: _Columns | None, order: np.ndarray, shape_errors: list[RowError] = ()
    ) -> None:
        self.cols = cols
        self.order = order
        self.shape_errors = list(shape_errors)

    @classmethod
    def errors_only(cls, errors: list[RowError]) -> _Rows:
        return cls(None, np.empty(0, dtype=np.int64), errors)

    def _one(self, i: int) -> Interaction | RowError:
        c = self.cols
        assert c is not None
        user, item = c.user[i].as_py(), c.item[i].as_py()
        rating, ts_raw = c.rating[i].as_py(), c.ts_raw[i].as_py()
        line, ts = int(c.line[i]), float(c.ts_num[i])
        raw = f"{user}\t{item}\t{rating}\t{ts_raw}"
        if ts != ts:  # NaN: missing or non-numeric timestamp
            return RowError(line, "the timestamp is not a number", raw)
        try:
            return Interaction(
                event_id=event_id_for(SOURCE, line),
                user_id=user,
                item_id=item,
                kind="rating",
                rating=rating,
                ts=int(ts),  # epoch seconds; pydantic makes it an aware UTC datetime
                source=SOURCE,
            )
        except ValidationError as exc:
            return RowError(line, validation_reason(exc), raw)

    def events(self) -> Iterator[Interaction | RowError]:
        yield from self.shape_errors
        for i in self.order.tolist():
            yield self._one(i)

    def encode(self) -> EncodedChunk:
        chunk = EncodedChunk([], [], np.empty(0), [(0, e) for e in self.shape_errors])
        c = self.cols
        if c is None or not len(self.order):
            return chunk
        order = self.order
        take = pa.array(order)
        user = c.user.take(take)
        fast_values = encode_interactions(
            pc.binary_join_element_wise(
                SOURCE + ":", pa.array(c.line[order]).cast(pa.string()), ""
            ),
            user,
            c.item.take(take),
            c.rating_num[order],
            np.where(c.fast[order], c.ts_num[order], 0),
            kind="rating",
            source=SOURCE,
        )
        keys: list[bytes | None] = user.cast(pa.binary()).to_pylist()
        fast = c.fast[order]
        if fast.all():
            chunk.keys, chunk.values, chunk.ts = keys, fast_values, c.ts_num[order]
            return chunk
        # Some rows need the schema: merge them in, in order.
        ts_out: list[float] = []
        for pos, i in enumerate(order.tolist()):
            if fast[pos]:
                chunk.keys.append(keys[pos])
                chunk.values.append(fast_values[pos])
                ts_out.append(float(c.ts_num[i]))
                continue
            item = self._one(i)
            if isinstance(item, RowError):
                chunk.errors.append((len(chunk.values), item))
            else:
                chunk.keys.append(EVENTS_INTERACTIONS.key_of(item))
                chunk.values.append(codecs.encode(EVENTS_INTERACTIONS, item))
                ts_out.append(item.ts.timestamp())
        chunk.ts = np.array(ts_out, dtype=float)
        return chunk


def load_items(directory: Path) -> list[CatalogItem]:
    """The 1,682 movies: title, year and genres."""
    items = []
    with open(directory / "ml-100k.item", encoding="utf-8", errors="replace") as fh:
        next(fh)
        for raw in fh:
            item_id, title, year, classes = ([*raw.rstrip("\n").split("\t"), "", "", ""])[:4]
            items.append(
                CatalogItem(
                    item_id=item_id,
                    title=title.strip(),
                    year=int(year) if year.strip().isdigit() else None,
                    genres=[g for g in classes.split() if g],
                )
            )
    return items
