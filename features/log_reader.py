"""Reading a whole topic directly, from its first offset to the end offsets taken at start.

No consumer group is involved (partitions are assigned, nothing is committed), so a backfill
never disturbs a running processor's group and always sees the whole log. Messages come back
per partition in offset order, which is the order a processor sees one user's events in.
"""

from __future__ import annotations

from collections.abc import Iterator

from streamrec.features.errors import BackfillError
from streamrec.infra.settings import Settings
from streamrec.streams.errors import TopicReadError
from streamrec.streams.table_reader import TopicReader


def read_topic(
    settings: Settings, topic: str, timeout_s: float = 300.0
) -> Iterator[tuple[int, int, bytes | None, bytes | None]]:
    """Yield (partition, offset, key, value) of every message up to the current end."""
    try:
        with TopicReader(
            settings.kafka_config(),
            topic,
            group="streamrec-backfill-reader",
            config={"fetch.max.bytes": 52_428_800},
        ) as reader:
            for batch in reader.read_to_end(timeout_s, batch=10_000):
                for msg in batch:
                    yield msg.partition(), msg.offset(), msg.key(), msg.value()
    except TopicReadError as exc:
        raise BackfillError(str(exc)) from exc
