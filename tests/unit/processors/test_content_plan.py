"""The content pipeline's buffer planning: decode, last change wins, popular first."""

from __future__ import annotations

from streamrec.processors.content_pipeline import InFlight, plan
from streamrec.streams import codecs
from streamrec.topics import CATALOG_ITEMS, CatalogItem


def _msg(item: CatalogItem) -> tuple[str, bytes]:
    return item.item_id, codecs.encode(CATALOG_ITEMS, item)


def test_upserts_are_ordered_by_popularity_and_removals_split_off():
    work = plan(
        [
            _msg(CatalogItem(item_id="tail", title="Tail", popularity_hint=0.1)),
            _msg(CatalogItem(item_id="hit", title="Hit", popularity_hint=9.0)),
            _msg(CatalogItem(item_id="mid", title="Mid", popularity_hint=3.0)),
            _msg(CatalogItem(item_id="gone", op="remove")),
        ]
    )
    assert [i.item_id for i in work.upserts] == ["hit", "mid", "tail"]
    assert work.removals == ["gone"]
    assert work.malformed == []


def test_the_last_change_of_an_item_in_a_buffer_wins():
    work = plan(
        [
            _msg(CatalogItem(item_id="a", title="Old title")),
            _msg(CatalogItem(item_id="b", op="remove")),
            _msg(CatalogItem(item_id="a", title="New title")),
            _msg(CatalogItem(item_id="b", title="Back again")),
            _msg(CatalogItem(item_id="c", title="Short-lived")),
            _msg(CatalogItem(item_id="c", op="remove")),
        ]
    )
    assert [(i.item_id, i.title) for i in work.upserts] == [("a", "New title"), ("b", "Back again")]
    assert work.removals == ["c"]


def test_malformed_items_are_kept_with_their_reason():
    work = plan(
        [
            ("junk", b"not json"),
            ("none", None),
            ("empty", codecs.encode(CATALOG_ITEMS, CatalogItem(item_id="e", title=""))),
            ("bad", b'{"item_id": "x", "year": 12}'),
        ]
    )
    reasons = dict(work.malformed)
    assert set(reasons) == {"junk", "none", "empty", "bad"}
    assert "nothing to embed" in reasons["empty"]
    assert "year" in reasons["bad"]
    assert work.upserts == [] and work.removals == []


def _todo(item_id: str, h: str) -> tuple[CatalogItem, str, str]:
    return CatalogItem(item_id=item_id, title=item_id), item_id, h


def test_an_item_is_compared_with_the_hash_its_in_flight_buffer_will_write():
    flight = InFlight()
    # Buffer n changes "a" from h1 (stored) to h2 and is still being published.
    flight.claim([], flight.changed([_todo("a", "h2")], ["h1"]))
    # Buffer n+1 changes it back to h1: against the store it looks unchanged; it is not.
    assert [i.item_id for i, _, _ in flight.changed([_todo("a", "h1")], ["h1"])] == ["a"]
    # The same hash as the one in flight is a repeat: nothing to embed.
    assert flight.changed([_todo("a", "h2")], ["h1"]) == []


def test_an_upsert_after_an_in_flight_removal_is_embedded_again():
    flight = InFlight()
    flight.claim(["a"], [])
    assert len(flight.changed([_todo("a", "h1")], ["h1"])) == 1


def test_settling_forgets_a_buffer_unless_a_later_one_claimed_the_item():
    flight = InFlight()
    first, second = [_todo("a", "h2"), _todo("b", "h5")], [_todo("a", "h3")]
    flight.claim(["c"], first)
    flight.claim([], second)
    flight.settle(["c"], first)  # "a" now belongs to the second buffer
    assert len(flight) == 1
    assert flight.changed([_todo("a", "h3")], ["h2"]) == []
    flight.settle([], second)
    assert len(flight) == 0
    assert len(flight.changed([_todo("a", "h3")], ["h2"])) == 1
