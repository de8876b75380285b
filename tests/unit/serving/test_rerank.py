import numpy as np

from streamrec.serving.ports import ItemInfo
from streamrec.serving.rerank import rerank, rerank_arrays, rerank_many

GENRES = {"1": ["Drama"], "2": ["Drama"], "3": ["Drama"], "4": ["Comedy"], "5": ["Action"]}


def info(item_id):
    return ItemInfo(item_id, genres=GENRES.get(item_id, []))


def test_drops_excluded_and_duplicates():
    scored = [("1", 0.9), ("2", 0.8), ("1", 0.7), ("4", 0.5)]
    out = rerank(scored, 3, exclude={"2"}, item_info=info, max_genre_share=1.0)
    assert [i for i, _ in out] == ["1", "4"]


def test_genre_share_is_capped_and_deferred_items_backfill():
    scored = [("1", 0.9), ("2", 0.8), ("3", 0.7), ("4", 0.2), ("5", 0.1)]
    out = rerank(scored, 3, exclude=set(), item_info=info, max_genre_share=0.3)
    assert [i for i, _ in out] == ["1", "4", "5"]  # one Drama in three slots
    out = rerank(scored, 3, exclude=set(), item_info=info, max_genre_share=0.5)
    assert [i for i, _ in out] == ["1", "2", "4"]  # two of three


def test_diversity_never_leaves_the_list_short():
    scored = [("1", 0.9), ("2", 0.8), ("3", 0.7)]
    out = rerank(scored, 3, exclude=set(), item_info=info, max_genre_share=0.3)
    assert [i for i, _ in out] == ["1", "2", "3"]


def test_the_array_form_chooses_exactly_what_the_full_sort_chooses():
    # Random lists with ties (rounded scores), duplicates, exclusions and crowded genres: the
    # partial sort must never change the answer, also when the head runs out.
    import random

    import numpy as np

    from streamrec.serving.rerank import rerank_arrays

    rng = random.Random(7)
    genres = ["Drama", "Comedy", "Action", "Horror"]
    catalog = {
        str(i): ItemInfo(str(i), genres=rng.sample(genres, rng.randint(0, 2))) for i in range(300)
    }
    for trial in range(300):
        n = rng.randint(0, 300)
        ids = [str(rng.randrange(300)) for _ in range(n)]
        scores = np.array([round(rng.random(), 1 if trial % 2 else 6) for _ in range(n)])
        exclude = {str(rng.randrange(300)) for _ in range(rng.randint(0, 120))}
        k, share = rng.choice([1, 5, 20]), rng.choice([0.2, 0.4, 1.0])
        full = rerank(list(zip(ids, scores.tolist(), strict=True)), k, exclude, catalog.get, share)
        fast = rerank_arrays(ids, scores, k, exclude, catalog.get, share)
        assert fast == full, (trial, k, share)


def test_a_batch_reranks_each_member_as_rerank_arrays_does():
    rng = np.random.default_rng(7)
    genres = ["a", "b", "c", "d"]
    info = {str(i): ItemInfo(str(i), genres=[genres[i % 4]]) for i in range(600)}
    ids, scores, ks, excludes = [], [], [], []
    for n in (0, 1, 7, 40, 500, 500, 120):
        member_ids = [str(i) for i in rng.permutation(600)[:n]]
        # coarse scores: many ties, at the head's edge too
        ids.append(member_ids)
        scores.append(np.round(rng.random(n), 1))
        ks.append(int(rng.integers(1, 30)))
        excludes.append(set(rng.choice(member_ids, size=min(n, 60)).tolist()) if n else set())
    ks[5] = 20
    excludes[5] = set(ids[5][:400])  # the rules use up the shared head: the full list decides
    got = rerank_many(ids, scores, ks, excludes, info.get, 0.4)
    for b in range(len(ids)):
        assert got[b] == rerank_arrays(ids[b], scores[b], ks[b], excludes[b], info.get, 0.4)
