"""Template explanations from serving's features (pure; the Redis path is an integration test)."""

from __future__ import annotations

from streamrec.serving.explanations import ItemFacts, WatchedItem, template_for

RECENT = [
    WatchedItem("1", "Toy Story (1995)", ("Animation", "Comedy")),
    WatchedItem("2", "Heat (1995)", ("Crime", "Thriller")),
]


def test_a_watched_item_sharing_a_genre_is_the_reason() -> None:
    assert template_for("9", RECENT, ItemFacts(("Thriller",))) == "Because you watched Heat (1995)"
    # The most recent match wins.
    assert template_for("9", RECENT, ItemFacts(("Comedy", "Crime"))).endswith("Toy Story (1995)")


def test_popular_items_say_so_with_their_genre() -> None:
    assert template_for("9", RECENT, ItemFacts(("Western",), popular=True)) == (
        "Popular in Western this week"
    )
    assert template_for("9", [], ItemFacts((), popular=True)) == "Popular this week"


def test_fallbacks() -> None:
    assert (
        template_for("9", RECENT, ItemFacts(("Western",))) == "Because you watched Toy Story (1995)"
    )
    assert template_for("9", [], ItemFacts(("unknown", "Western"))) == "Recommended in Western"
    assert template_for("9", [], ItemFacts()) == "Recommended for you"
    # Never "because you watched" the item itself.
    assert template_for("1", RECENT[:1], ItemFacts()) == "Recommended for you"
