"""The columnar replay path writes exactly the bytes and errors of the row-by-row path."""

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from streamrec.streams import codecs
from streamrec.streams.codecs import validation_reason
from streamrec.streams.replay import encoded_chunks
from streamrec.streams.sources.base import RowError
from streamrec.streams.sources.movielens import MovieLensInteractions
from streamrec.topics import EVENTS_INTERACTIONS, Interaction

HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
ROWS = [
    "196\t242\t3\t881250949",
    "186\t302\t10\t891717742",
    "22\t377\t0\t880606923",
    "244\t51\t2.5\t880606923",  # fractional rating: through the schema
    "1\t2\t11\t880606924",  # out of range
    "1\t2\t-1\t880606925",
    'u"q\t2\t3\t880606926',  # a quote JSON must escape
    "u\\b\t2\t3\t880606927",
    "üser\t2\t3\t880606928",
    "x" * 128 + "\t2\t3\t880606929",
    "x" * 129 + "\t2\t3\t880606930",  # too long
    "\t2\t3\t880606931",  # empty user
    "7\t8\t\t880606932",  # empty rating
    "7\t8\t4\tnot-a-time",
    "7\t8\t4\t",
    "7\t8\t4\t881250949.7",  # a float time is truncated, as before
    "7\t8\t4\t1700000000000",  # pydantic reads this as milliseconds
    "7\t8\t4\t-5",
    "7\t8\t4\t881250949",  # same time as line 2: ties keep line order
    "5\t6\t7",  # wrong shape
    "",  # empty line
    "5\t6\t7\t8\t9",
    "ab-c.d\t6\t4\t 881250950",
]


def _reference(path):
    """The row-by-row reading replay had before chunks: (events in order, errors in order)."""
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    good, errors = [], []
    for line_no, raw in enumerate(lines, start=2):
        parts = raw.split("\t")
        if len(parts) == 4:
            good.append([*parts, line_no])
        else:
            errors.append(
                RowError(line_no, f"expected 4 tab-separated fields, got {len(parts)}", raw)
            )
    frame = pd.DataFrame(good, columns=["user", "item", "rating", "timestamp", "line"])
    frame["ts_num"] = pd.to_numeric(frame["timestamp"], errors="coerce")
    frame = frame.sort_values(["ts_num", "line"], kind="stable", na_position="last")
    out = []
    for user, item, rating, ts_raw, line, ts in frame.itertuples(index=False):
        raw = f"{user}\t{item}\t{rating}\t{ts_raw}"
        if ts != ts:
            out.append(RowError(line, "the timestamp is not a number", raw))
            continue
        try:
            out.append(
                Interaction(
                    event_id=f"ml-100k:{line}",
                    user_id=user,
                    item_id=item,
                    kind="rating",
                    rating=rating,
                    ts=int(ts),
                    source="ml-100k",
                )
            )
        except ValidationError as exc:
            out.append(RowError(line, validation_reason(exc), raw))
    return errors + out


def _flatten(chunks):
    """(key, value) of each event and the errors, in the order replay meets them."""
    out = []
    for chunk in chunks:
        start = 0
        for pos, error in [*chunk.errors, (len(chunk.values), None)]:
            out += list(zip(chunk.keys[start:pos], chunk.values[start:pos], strict=True))
            if error is not None:
                out.append(error)
            start = pos
    return out


def _expected(items):
    return [
        i
        if isinstance(i, RowError)
        else (i.user_id.encode(), codecs.encode(EVENTS_INTERACTIONS, i))
        for i in items
    ]


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("size", [3, 1000])
def test_chunks_match_the_row_by_row_path(tmp_path, newline, size):
    path = tmp_path / "ml-100k.inter"
    path.write_bytes((HEADER + newline.join(ROWS)).encode())
    reference = _reference(path)
    assert sum(isinstance(r, RowError) for r in reference) > 5  # the file does test errors
    source = MovieLensInteractions(tmp_path)
    assert _flatten(source.chunks(size)) == _expected(reference)
    assert list(source) == reference


def test_chunk_timestamps_are_the_events_times(tmp_path):
    (tmp_path / "ml-100k.inter").write_text(HEADER + "\n".join(ROWS) + "\n")
    chunks = list(MovieLensInteractions(tmp_path).chunks(4))
    events = [r for r in MovieLensInteractions(tmp_path) if not isinstance(r, RowError)]
    ts = np.concatenate([c.ts for c in chunks])
    assert ts.tolist() == [e.ts.timestamp() for e in events]


def test_any_source_becomes_the_same_chunks(tmp_path):
    (tmp_path / "ml-100k.inter").write_text(HEADER + "\n".join(ROWS))
    source = MovieLensInteractions(tmp_path)
    generic = encoded_chunks(iter(source), EVENTS_INTERACTIONS, size=4)
    assert _flatten(generic) == _flatten(source.chunks(7))
