from serving.ports import ItemInfo
from serving.rerank import rerank

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
