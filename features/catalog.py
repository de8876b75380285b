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
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from streamrec.features.errors import FeatureError
from streamrec.infra.settings import Settings
from streamrec.streams import codecs
from streamrec.topics import CATALOG_ITEMS, CatalogItem
from streamrec.topics.errors import SchemaError


class CatalogGenres:
    """item_id -> genres, loaded from catalog.items and optionally followed."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.genres: dict[str, tuple[str, ...]] = {}
        self.years: dict[str, int | None] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Consumer | None = None

    def get(self, item_id: str) -> tuple[str, ...]:
        return self.genres.get(item_id, ())

    def _apply(self, value: bytes | None, key: bytes | None) -> None:
        if value is None:  # tombstone: the item's record was deleted
            if key is not None:
                self.genres.pop(key.decode(), None)
            return
        try:
            item = codecs.decode(CATALOG_ITEMS, value)
        except SchemaError:
            return
        assert isinstance(item, CatalogItem)
        if item.op == "remove":
            # Removed items keep their genres: past interactions with them still count.
            return
        self.genres[item.item_id] = tuple(item.genres)
        self.years[item.item_id] = item.year

    def load(self, timeout_s: float = 60.0) -> int:
        """Read catalog.items to its current end; returns the number of items known."""
        consumer = Consumer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap,
                "group.id": "streamrec-catalog-genres",  # required by librdkafka; never committed
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
        try:
            md = consumer.list_topics(CATALOG_ITEMS.name, timeout=10).topics[CATALOG_ITEMS.name]
            if md.error is not None:
                raise FeatureError(f"cannot read {CATALOG_ITEMS.name}: {md.error}")
            parts = sorted(md.partitions)
            ends = {}
            for p in parts:
                _low, high = consumer.get_watermark_offsets(
                    TopicPartition(CATALOG_ITEMS.name, p), timeout=10
                )
                ends[p] = high
            consumer.assign(
                [TopicPartition(CATALOG_ITEMS.name, p, OFFSET_BEGINNING) for p in parts]
            )
            pending = {p for p in parts if ends[p] > 0}
            deadline = time.monotonic() + timeout_s
            while pending:
                if time.monotonic() > deadline:
                    raise FeatureError(f"catalog.items not read to its end in {timeout_s:.0f} s")
                for msg in consumer.consume(5000, timeout=0.5):
                    if msg.error():
                        continue
                    self._apply(msg.value(), msg.key())
                    if msg.offset() >= ends[msg.partition()] - 1:
                        pending.discard(msg.partition())
        except KafkaException as exc:
            consumer.close()
            raise FeatureError(f"cannot read {CATALOG_ITEMS.name}: {exc}") from exc
        self._consumer = consumer
        return len(self.genres)

    def start_following(self) -> None:
        """Apply later catalog changes in a daemon thread (after `load`)."""
        if self._consumer is None or self._thread is not None:
            return

        def follow() -> None:
            consumer = self._consumer
            assert consumer is not None
            while not self._stop.is_set():
                for msg in consumer.consume(1000, timeout=0.5):
                    if not msg.error():
                        self._apply(msg.value(), msg.key())
            consumer.close()

        self._thread = threading.Thread(target=follow, name="catalog-genres", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        elif self._consumer is not None:
            self._consumer.close()
