"""Publishing catalog changes (loads, single upserts, removals) to catalog.items."""

from __future__ import annotations

from collections.abc import Iterable

from streamrec.infra.settings import Settings
from streamrec.streams.producer import DeliveryTracker, bulk_producer, flush, produce_event
from streamrec.topics import CATALOG_ITEMS, CatalogItem


def publish_items(settings: Settings, items: Iterable[CatalogItem]) -> int:
    """Produce every item to catalog.items and wait for the broker to acknowledge them all."""
    producer = bulk_producer(settings)
    tracker = DeliveryTracker()
    count = 0
    for item in items:
        produce_event(producer, CATALOG_ITEMS, item, tracker)
        count += 1
    flush(producer)
    tracker.raise_if_failed()
    return count
