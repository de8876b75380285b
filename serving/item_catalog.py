"""Item features held in the worker's memory, refreshed from the stream.

Responsibilities:
- `ItemCatalog`: item id -> `ItemInfo` (title, genres, year, popularity), read by re-ranking,
  the fallbacks and the answer; lookups are dict reads, never I/O on the request path;
- `CatalogFollower`: a thread that reads catalog.items (compacted: the latest state per
  item) from the beginning and then follows it, applying upserts and removals; `loaded` is
  set once it has caught up with the end offsets it saw at start (the snapshot readiness
  waits for). Popularity comes from the trending zsets (the core's refresher sets it).

Failure policy: a malformed catalog message is skipped and counted (the catalog's own
processors dead-letter it); a broker outage leaves the last known catalog in place.
"""

from __future__ import annotations

from streamrec.infra.settings import Settings
from streamrec.serving.explanations import explainable_genres
from streamrec.serving.ports import ItemInfo
from streamrec.streams.table_reader import TableFollower
from streamrec.topics import CATALOG_ITEMS, CatalogItem


class ItemCatalog:
    """Item metadata and popularity by id; writes come from one thread, reads from the loop."""

    def __init__(self) -> None:
        self.items: dict[str, ItemInfo] = {}
        self.removed: set[str] = set()
        # item id -> (the ItemInfo it was made from, its explainable genres): made once per
        # item version instead of once per answer that explains it
        self._explainable: dict[str, tuple[ItemInfo, tuple[str, ...]]] = {}

    def get(self, item_id: str) -> ItemInfo | None:
        return self.items.get(item_id)

    def explainable_genres(self, item_id: str) -> tuple[str, ...]:
        """The item's genres a template may name (`explanations.explainable_genres`)."""
        info = self.items.get(item_id)
        if info is None:
            return ()
        made = self._explainable.get(item_id)
        if made is None or made[0] is not info:
            made = (info, explainable_genres(info.genres))
            self._explainable[item_id] = made
        return made[1]

    def popularity(self, item_id: str) -> float:
        info = self.items.get(item_id)
        return info.popularity if info is not None else 0.0

    def apply(self, item: CatalogItem) -> None:
        if item.op == "remove":
            self.items.pop(item.item_id, None)
            self._explainable.pop(item.item_id, None)
            self.removed.add(item.item_id)
            return
        old = self.items.get(item.item_id)
        self.items[item.item_id] = ItemInfo(
            item_id=item.item_id,
            title=item.title,
            genres=list(item.genres),
            year=item.year,
            popularity=old.popularity if old is not None else 0.0,
        )
        self.removed.discard(item.item_id)

    def set_popularity(self, scores: dict[str, float]) -> None:
        for item_id, info in self.items.items():
            info.popularity = scores.get(item_id, 0.0)

    def __len__(self) -> int:
        return len(self.items)


class CatalogFollower(TableFollower):
    """Follows catalog.items into an `ItemCatalog` on a daemon thread."""

    def __init__(self, settings: Settings, catalog: ItemCatalog) -> None:
        super().__init__(settings, CATALOG_ITEMS, "serving-catalog")
        self.catalog = catalog

    def apply(self, event: CatalogItem) -> None:
        self.catalog.apply(event)

    def forget(self, key: str) -> None:
        self.catalog.items.pop(key, None)
