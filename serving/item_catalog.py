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

import threading
import uuid

from streamrec.infra.settings import Settings
from streamrec.serving.ports import ItemInfo
from streamrec.streams.errors import TopicReadError
from streamrec.streams.table_reader import TopicReader
from streamrec.topics import CATALOG_ITEMS, CatalogItem


class ItemCatalog:
    """Item metadata and popularity by id; writes come from one thread, reads from the loop."""

    def __init__(self) -> None:
        self.items: dict[str, ItemInfo] = {}
        self.removed: set[str] = set()

    def get(self, item_id: str) -> ItemInfo | None:
        return self.items.get(item_id)

    def popularity(self, item_id: str) -> float:
        info = self.items.get(item_id)
        return info.popularity if info is not None else 0.0

    def apply(self, item: CatalogItem) -> None:
        if item.op == "remove":
            self.items.pop(item.item_id, None)
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


class CatalogFollower:
    """Follows catalog.items into an `ItemCatalog` on a daemon thread."""

    def __init__(self, settings: Settings, catalog: ItemCatalog) -> None:
        self.settings = settings
        self.catalog = catalog
        self.loaded = threading.Event()
        self.skipped = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="catalog-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        reader = self._open()
        if reader is None:
            return
        try:
            while not self._stop.is_set():
                for change in reader.decode(reader.poll(1000, timeout_s=0.2)):
                    if isinstance(change.event, CatalogItem):
                        self.catalog.apply(change.event)
                    elif change.key is not None:  # tombstone: the item's record was deleted
                        self.catalog.items.pop(change.key, None)
                self.skipped = reader.skipped
                if reader.caught_up:
                    self.loaded.set()
        finally:
            reader.close()

    def _open(self) -> TopicReader | None:
        while not self._stop.is_set():
            try:
                return TopicReader(
                    self.settings.kafka_bootstrap,
                    CATALOG_ITEMS,
                    # Every worker reads the whole catalog: a group of its own, nothing committed.
                    group=f"serving-catalog-{uuid.uuid4().hex[:8]}",
                    timeout_s=5.0,
                )
            except TopicReadError:
                self._stop.wait(1.0)  # broker not up yet: try again
        return None
