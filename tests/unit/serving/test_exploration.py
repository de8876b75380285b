"""Exploration's rotation (least shown first, live items only) and its place in the core's
answers, with in-memory doubles of the stores."""

from __future__ import annotations

import orjson
import pytest

from streamrec.infra.settings import ServingSettings
from streamrec.serving.core import Recommender
from streamrec.serving.exploration import (
    SCAN_SLACK,
    ExplorationRotation,
    Explorer,
    explore_variants,
    least_shown_order,
)
from streamrec.serving.item_catalog import ItemCatalog
from streamrec.serving.memory import (
    MemoryCandidates,
    MemoryFeatures,
    MemoryPopular,
    TableRanker,
)
from streamrec.serving.schemas import RecQuery
from streamrec.topics import CatalogItem, RecResponse
from streamrec.topics.stores import Candidate, CandidateList


def rotation(ids, removed=(), seed=0) -> ExplorationRotation:
    r = ExplorationRotation(seed=seed)
    r.refresh(ids, set(removed))
    return r


def test_the_least_shown_items_come_first_and_ties_follow_the_tie_break():
    shown = {"a": 3, "b": 0, "c": 1}
    tie = {"a": 0.1, "b": 0.9, "c": 0.5, "d": 0.2}
    assert least_shown_order(["a", "b", "c", "d"], set(), shown, tie) == ["d", "b", "c", "a"]
    # An item new since the tie-break was drawn comes first among its equals.
    assert least_shown_order(["a", "b", "e"], {"a"}, shown, tie) == ["e", "b"]


def test_every_live_item_is_handed_out_once_before_any_twice():
    ids = [str(i) for i in range(50)]
    r = rotation(ids)
    taken = [i for _ in range(10) for i in r.take(5, set(), set())]
    assert sorted(taken, key=int) == ids  # 50 slots, 50 distinct items
    again = r.take(5, set(), set())
    assert len(again) == 5 and set(again) <= set(ids)  # wrapped: a second round


def test_take_skips_excluded_and_answered_items_and_keeps_them_for_the_next_request():
    r = rotation(["a", "b", "c", "d", "e"])
    first = list(r.order)
    got = r.take(2, exclude={first[0]}, have={first[1]})
    assert got == first[2:4]
    # The skipped items were not passed: the next request without those exclusions gets them.
    assert set(r.take(2, set(), set())) == {first[0], first[1]}


def test_take_never_returns_the_same_item_twice_in_one_answer():
    r = rotation(["a", "b"])
    assert sorted(r.take(5, set(), set())) == ["a", "b"]


def test_the_scan_is_bounded_rather_than_walking_the_whole_catalog():
    ids = [str(i) for i in range(1000)]
    r = rotation(ids)
    blocked = set(r.order[: SCAN_SLACK + 10])  # the front of the rotation is all excluded
    assert r.take(3, blocked, set()) == []


def test_a_refresh_puts_what_was_shown_behind_what_was_not():
    ids = [str(i) for i in range(10)]
    r = rotation(ids)
    shown = r.order[:4]
    r.record(shown)
    r.record(shown[:1])
    r.refresh(ids, set())
    assert set(r.order[:6]) == set(ids) - set(shown)
    assert r.order[-1] == shown[0]  # shown twice: last


def test_new_uploads_join_and_removed_items_leave_at_the_refresh():
    r = rotation(["a", "b", "c"])
    r.record(["a", "b", "c"])
    r.refresh(["a", "b", "c", "new"], removed={"b"})
    assert r.order[0] == "new"  # never shown: first
    assert "b" not in r.order and len(r) == 3
    assert "b" not in r.shown  # counts follow the catalog


def test_an_empty_rotation_gives_nothing():
    assert ExplorationRotation().take(3, set(), set()) == []


def test_the_explorer_replaces_the_tail_below_every_ranked_score():
    ex = Explorer(2, ["treatment"], lambda u: u, rotation(["x", "y", "z"]))
    top = [("1", 0.9), ("2", 0.8), ("3", 0.7), ("4", 0.6)]
    out, explored = ex.explore(top, 4, exclude={"z"})
    assert [i for i, _ in out[:2]] == ["1", "2"]
    assert sorted(explored) == ["x", "y"] and [i for i, _ in out[2:]] == explored
    scores = [s for _, s in out]
    assert scores == sorted(scores, reverse=True) and scores[2] < 0.8


def test_the_explorer_fills_a_short_answer_before_dropping_ranked_items():
    ex = Explorer(2, ["t"], lambda u: u, rotation(["x", "y"]))
    out, explored = ex.explore([("1", 0.9)], 10, set())
    assert [i for i, _ in out] == ["1", *explored] and len(explored) == 2


def test_the_explorer_keeps_the_first_item_and_the_variants_it_was_given():
    ex = Explorer(5, explore_variants(" treatment , b "), lambda u: u, rotation(["x"]))
    assert ex.explore([("1", 0.9)], 1, set()) == ([("1", 0.9)], [])  # k=1: nothing to give
    assert ex.applies("treatment") and ex.applies("b") and not ex.applies("control")
    assert not Explorer(0, ["t"], lambda u: u).applies("t")


# --- in the core --------------------------------------------------------------------------


def catalog(n: int = 40) -> ItemCatalog:
    c = ItemCatalog()
    for i in range(1, n + 1):
        c.apply(CatalogItem(item_id=str(i), title=f"Movie {i}", genres=["Drama"]))
    return c


def core(explorer: Explorer | None, cands: dict[str, list[int]]) -> Recommender:
    ranker = TableRanker(lambda u, i: -float(i))  # the candidates' own order
    rows = {
        u: CandidateList(
            user_id=u,
            model_version="tt1",
            items=[
                Candidate(item_id=str(i), score=1.0 / (n + 1), sources=["t"])
                for n, i in enumerate(ids)
            ],
        )
        for u, ids in cands.items()
    }
    return Recommender(
        ServingSettings(cache_ttl_s=0.0, max_genre_share=1.0),
        MemoryFeatures({}),
        MemoryCandidates(rows),
        MemoryPopular({"24h": [(str(i), 100.0 - i) for i in range(1, 11)]}),
        lambda batch: [(s, ranker.version) for s in ranker.score(batch)],
        catalog(),
        explorer=explorer,
    )


def variant(user_id: str) -> str:
    return "treatment" if user_id.startswith("t") else "control"


@pytest.fixture
async def explored_core():
    c = core(Explorer(3, ["treatment"], variant), {"t1": list(range(1, 21))})
    await c.start()
    yield c
    await c.stop()


async def ask(c: Recommender, user: str, k: int = 10, rid: str = "r"):
    return await c.recommend(RecQuery(request_id=rid, user_id=user, k=k))


async def test_a_treatment_answer_ends_with_marked_least_shown_items(explored_core):
    c = explored_core
    a = await ask(c, "t1")
    assert len(a.item_ids) == 10
    assert a.explored and set(a.item_ids[-3:]) == a.explored
    assert not a.explored & set(a.item_ids[:7])
    reply = RecResponse.model_validate_json(a.response_json())
    assert [i.explored for i in reply.items] == [False] * 7 + [True] * 3
    body = orjson.loads(a.http_json(c.catalog.get))
    assert [bool(i.get("explored")) for i in body["items"]] == [False] * 7 + [True] * 3
    # What was shown counts: the next answer explores other items.
    b = await ask(c, "t1", rid="r2")
    assert not b.explored & a.explored


async def test_a_control_answer_and_a_popular_answer_keep_their_rules(explored_core):
    c = explored_core
    a = await ask(c, "c1")  # control, no candidates: POPULAR, not explored
    assert a.level == "POPULAR" and not a.explored
    assert b'"explored"' not in a.response_json()  # the old contract's bytes
    p = await ask(c, "t-no-cands")  # treatment at POPULAR: explored from memory too
    assert p.level == "POPULAR" and len(p.explored) == 3
    assert not p.explored & set(c.catalog.removed)


async def test_removed_items_are_never_explored(explored_core):
    c = explored_core
    for i in range(1, 36):
        c.catalog.apply(CatalogItem(item_id=str(i), op="remove"))
    await c.refresh_exploration()
    a = await ask(c, "t1", k=5)
    assert a.explored and all(int(i) > 35 for i in a.explored)


async def test_exploration_is_skipped_when_the_rotation_is_empty_or_fails():
    class Broken(ExplorationRotation):
        def take(self, n, exclude, have):
            raise RuntimeError("a bug in the rotation")

    empty = core(Explorer(3, ["treatment"], variant, ExplorationRotation()), {})
    empty.catalog = ItemCatalog()  # nothing loaded yet
    broken = core(Explorer(3, ["treatment"], variant, Broken()), {})
    for c in (empty, broken):
        await c.start()
        try:
            a = await ask(c, "t1")
            assert a.level == "POPULAR" and len(a.item_ids) == 10 and not a.explored
        finally:
            await c.stop()
