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

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from streamrec.infra.settings import Settings
from streamrec.serving.ports import ItemInfo
from streamrec.streams import codecs
from streamrec.topics import CATALOG_ITEMS, CatalogItem
from streamrec.topics.errors import SchemaError


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
        consumer = Consumer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap,
                # Every worker reads the whole catalog: a group of its own, nothing committed.
                "group.id": f"serving-catalog-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
            }
        )
        try:
            end = self._assign(consumer)
            while not self._stop.is_set():
                for msg in consumer.consume(1000, timeout=0.2):
                    if msg.error():
                        continue
                    try:
                        self.catalog.apply(codecs.decode_json(CatalogItem, msg.value()))
                    except SchemaError:
                        self.skipped += 1
                    p = msg.partition()
                    if end.get(p, 0) <= msg.offset() + 1:
                        end.pop(p, None)
                if not end:
                    self.loaded.set()
        finally:
            consumer.close()

    def _assign(self, consumer: Consumer) -> dict[int, int]:
        while not self._stop.is_set():
            try:
                md = consumer.list_topics(CATALOG_ITEMS.name, timeout=5)
                parts = list(md.topics[CATALOG_ITEMS.name].partitions)
                end = {}
                for p in parts:
                    low, high = consumer.get_watermark_offsets(
                        TopicPartition(CATALOG_ITEMS.name, p), timeout=5
                    )
                    if high > low:
                        end[p] = high
                consumer.assign(
                    [TopicPartition(CATALOG_ITEMS.name, p, OFFSET_BEGINNING) for p in parts]
                )
                return end
            except (KafkaException, KeyError):
                self._stop.wait(1.0)  # broker not up yet: try again
        return {}
