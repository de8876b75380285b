"""The rankings that need no model: the array form gives what the item-by-item rule says."""

import random
from collections import Counter

import pytest

from streamrec.serving.fallback import PopularRanking, simple_scores
from streamrec.serving.ports import Candidates, ItemInfo

GENRES = ["Drama", "Comedy", "Action", "Horror", "Animation"]


def reference(popular, recent, info, boost=0.5):
    """The rule written out item by item: normalised trending score plus `boost` times the
    share of the session's genre mentions that the item's genres cover."""
    top = max(s for _, s in popular) or 1.0
    mentions = Counter(g for i in recent if info(i) for g in info(i).genres)
    total = sum(mentions.values())
    out = []
    for item_id, score in popular:
        s = score / top
        if total and info(item_id) is not None:
            s += boost * sum(mentions[g] for g in info(item_id).genres) / total
        out.append((item_id, s))
    return out


def test_popular_ranking_matches_the_item_by_item_rule():
    rng = random.Random(3)
    catalog = {
        str(i): ItemInfo(str(i), genres=rng.sample(GENRES, rng.randint(0, 3))) for i in range(200)
    }
    catalog["odd"] = ItemInfo("odd", genres=["Film-Noir"])  # a genre no listed item has
    popular = [(str(i), float(rng.randint(1, 50))) for i in range(150)] + [("gone", 3.0)]
    ranking = PopularRanking(popular, catalog.get)
    for recent in ([], ["1", "2"], ["odd", "3", "4", "5"], ["unknown"]):
        got = list(zip(ranking.item_ids, ranking.scores_for(recent).tolist(), strict=True))
        want = reference(popular, recent, catalog.get)
        assert [i for i, _ in got] == [i for i, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want])
    assert ranking.scores_for(["1"])[0] > 0  # scores are normalised, not zeroed


def test_an_empty_trending_list_ranks_nothing():
    ranking = PopularRanking([], lambda _: None)
    assert ranking.item_ids == []
    assert ranking.scores_for(["1"]).tolist() == []


def test_simple_scores_keep_retrieval_order_with_popularity_as_tie_breaker():
    cands = Candidates(["a", "b", "c"], [0.5, 0.5, 0.9])
    scores = simple_scores(cands, lambda i: {"a": 10.0, "b": 1000.0}.get(i, 0.0))
    scored = dict(zip(cands.item_ids, scores.tolist(), strict=True))
    assert scored["c"] > scored["b"] > scored["a"]
