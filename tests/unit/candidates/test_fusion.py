"""Candidate fusion and debouncing (pure logic)."""

from streamrec.candidates.builder import WEIGHTS, covisit_hits, fuse, summary
from streamrec.candidates.debounce import Debouncer
from streamrec.topics.stores import CandidateList


def test_fusion_keeps_every_source_and_drops_excluded_items():
    ranked = {
        "two_tower": [("a", 0.9), ("b", 0.8), ("seen", 0.7)],
        "covisit": [("b", 5.0), ("c", 1.0)],
        "trending": [("d", 10.0)],
    }
    items = fuse(ranked, WEIGHTS["regular"], exclude={"seen"}, limit=10)
    by_id = {c.item_id: c for c in items}
    assert "seen" not in by_id
    assert by_id["b"].sources == ["two_tower", "covisit"]
    assert items[0].item_id == "b"  # proposed by two sources
    assert [c.score for c in items] == sorted((c.score for c in items), reverse=True)
    assert len(fuse(ranked, WEIGHTS["regular"], set(), limit=2)) == 2


def test_session_users_weigh_session_sources_first():
    ranked = {"two_tower": [("tt", 1.0)], "content": [("ct", 1.0)]}
    assert fuse(ranked, WEIGHTS["session"], set(), 5)[0].item_id == "ct"
    assert fuse(ranked, WEIGHTS["regular"], set(), 5)[0].item_id == "tt"


def test_covisit_weighs_the_latest_item_most():
    hits = covisit_hits([{"x": 10.0}, {"y": 11.0}], k=5)  # newest first
    assert [h[0] for h in hits] == ["x", "y"]


def test_summary_counts_per_source():
    c = CandidateList(
        user_id="u",
        model_version="v1",
        items=fuse(
            {"covisit": [("a", 1)], "trending": [("a", 1), ("b", 1)]}, WEIGHTS["regular"], set(), 5
        ),
    )
    s = summary(c)
    assert (s.count, s.sources, s.model_version) == (2, {"covisit": 1, "trending": 2}, "v1")


def test_debouncer_coalesces_and_bounds_the_delay():
    d = Debouncer(0.2)
    d.mark(["u1"], now=0.0)
    d.mark(["u1", "u2"], now=0.15)
    assert d.due(now=0.1) == []
    assert d.due(now=0.2) == ["u1"]  # due 0.2 s after its FIRST trigger
    assert d.due(now=0.3) == []
    assert d.due(now=0.4) == ["u2"]
    assert len(d) == 0
