"""Item genres for the feature processors: the latest catalog.items state, in memory.

Responsibilities:
- `CatalogGenres.load()`: read the compacted catalog.items topic from the beginning to its
  end offsets (every partition, no consumer group) into an item -> genres map;
- `start_following()`: keep reading it in a daemon thread, so upserts and removals made
  while the worker runs are applied within a poll interval.

Why not a Faust table or a consumer-group agent: every session worker needs every item,
while a consumer group would split catalog.items' partitions across workers, and a Faust
GlobalTable would copy the catalog into a changelog topic per app. ML-100K's 1,682 items
take ~0.1 MB; a catalog of millions would move this map to Redis (docs/adr/0022).
Malformed catalog messages are skipped (the content pipeline dead-letters them).
"""

from __future__ import annotations

import threading

from streamrec.features.errors import FeatureError
from streamrec.infra.settings import Settings
from streamrec.streams.errors import TopicReadError
from streamrec.streams.table_reader import Change, TopicReader
from streamrec.topics import CATALOG_ITEMS, CatalogItem


class CatalogGenres:
    """item_id -> genres, loaded from catalog.items and optionally followed."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.genres: dict[str, tuple[str, ...]] = {}
        self.years: dict[str, int | None] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reader: TopicReader | None = None

    def get(self, item_id: str) -> tuple[str, ...]:
        return self.genres.get(item_id, ())

    def _apply(self, changes: list[Change]) -> None:
        for change in changes:
            item = change.event
            if item is None:  # tombstone: the item's record was deleted
                if change.key is not None:
                    self.genres.pop(change.key, None)
                continue
            assert isinstance(item, CatalogItem)
            if item.op == "remove":
                # Removed items keep their genres: past interactions with them still count.
                continue
            self.genres[item.item_id] = tuple(item.genres)
            self.years[item.item_id] = item.year

    def load(self, timeout_s: float = 60.0) -> int:
        """Read catalog.items to its current end; returns the number of items known."""
        try:
            reader = TopicReader(
                self.settings.kafka_config(), CATALOG_ITEMS, group="streamrec-catalog-genres"
            )
        except TopicReadError as exc:
            raise FeatureError(str(exc)) from exc
        try:
            for msgs in reader.catch_up(timeout_s):
                self._apply(reader.decode(msgs))
        except TopicReadError as exc:
            reader.close()
            raise FeatureError(str(exc)) from exc
        self._reader = reader
        return len(self.genres)

    def start_following(self) -> None:
        """Apply later catalog changes in a daemon thread (after `load`)."""
        if self._reader is None or self._thread is not None:
            return

        def follow() -> None:
            reader = self._reader
            assert reader is not None
            try:
                while not self._stop.is_set():
                    self._apply(reader.decode(reader.poll(1000, timeout_s=0.5)))
            finally:
                reader.close()

        self._thread = threading.Thread(target=follow, name="catalog-genres", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        elif self._reader is not None:
            self._reader.close()
