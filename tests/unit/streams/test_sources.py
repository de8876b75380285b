import orjson
import pytest

from streamrec.streams.sources.base import RowError
from streamrec.streams.sources.eventlog import JsonLinesSource
from streamrec.streams.sources.movielens import MovieLensInteractions, load_items


@pytest.fixture
def tiny_ml(tmp_path):
    (tmp_path / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "196\t242\t3\t881250949\n"
        "186\t302\t3\t891717742\n"
        "22\t377\t1\tnot-a-time\n"
        "244\t51\t2\t880606923\n"
        "5\t6\t7\n"
    )
    (tmp_path / "ml-100k.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "1\tToy Story\t1995\tAnimation Children's Comedy\n"
        "267\tunknown\t\tunknown\n"
    )
    return tmp_path


def test_movielens_in_event_time_order_with_ids_from_line_numbers(tiny_ml):
    rows = list(MovieLensInteractions(tiny_ml))
    events = [r for r in rows if not isinstance(r, RowError)]
    errors = [r for r in rows if isinstance(r, RowError)]
    assert [e.event_id for e in events] == ["ml-100k:5", "ml-100k:2", "ml-100k:3"]
    assert [e.ts for e in events] == sorted(e.ts for e in events)
    assert [(e.line, e.reason) for e in errors] == [
        (6, "expected 4 tab-separated fields, got 3"),
        (4, "the timestamp is not a number"),
    ]
    assert [r.event_id for r in MovieLensInteractions(tiny_ml) if not isinstance(r, RowError)] == [
        e.event_id for e in events
    ]


def test_movielens_items(tiny_ml):
    items = load_items(tiny_ml)
    assert items[0].title == "Toy Story"
    assert items[0].genres == ["Animation", "Children's", "Comedy"]
    assert items[1].year is None


def test_jsonl_reports_line_and_reason_and_keeps_valid_rows(tmp_path):
    path = tmp_path / "log.jsonl"
    good = {"user_id": "1", "item_id": "2", "ts": "2024-01-01T00:00:00Z", "kind": "click"}
    path.write_bytes(
        b"\n".join(
            [
                orjson.dumps(good),
                b"{broken",
                orjson.dumps({**good, "kind": "teleport"}),
                b"",
                orjson.dumps({**good, "event_id": "mine"}),
            ]
        )
    )
    rows = list(JsonLinesSource(path))
    errors = [(r.line, r.reason) for r in rows if isinstance(r, RowError)]
    events = [r for r in rows if not isinstance(r, RowError)]
    assert [e.event_id for e in events] == ["log.jsonl:1", "mine"]
    assert [line for line, _ in errors] == [2, 3]
    assert "invalid JSON" in errors[0][1]
    assert "kind" in errors[1][1]
