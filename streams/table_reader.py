"""Reading a topic from its beginning up to the end offsets taken when the read starts.

Processes that rebuild state from a log (a compacted catalog, the vector index, the
invalidation processor's history, a backfill) all do the same thing: assign every partition
(no consumer group is joined, nothing is committed, so a reader never disturbs a running
processor's group and always sees the whole log), take each partition's end offset as its
bound, and consume until every partition has reached it.

Responsibilities:
- `end_offsets(consumer, topic)`: partition -> high watermark (the offset the next message
  gets), for every partition of the topic;
- `ReadProgress`: which partitions have reached their bound. A partition is done when a
  message at or past `bound - 1` arrives, or when the consumer's position or an end-of-
  partition event is at or past the bound: the offsets just below the bound may hold no
  message (a compacted topic cleaned them, or they are transaction markers);
- `TopicReader`: the assigned consumer. `read_to_end()` yields exactly the messages below
  the bounds, batch by batch; `catch_up()` yields everything until the bounds are reached
  (for a reader that keeps following with `poll()`); both raise `TopicReadTimeout` naming
  the partitions left behind;
- `Decoder`: decodes messages through the topic's contract, turning tombstones of a
  compacted topic into removals and skipping (and counting) malformed messages;
- `read_table(bootstrap, spec)`: a compacted topic as key -> latest value.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from streamrec.infra.settings import Settings
from streamrec.streams import codecs
from streamrec.streams.errors import TopicReadError, TopicReadTimeout
from streamrec.topics import TopicSpec
from streamrec.topics.base import Event
from streamrec.topics.errors import SchemaError

Bounds = dict[int, int]


def topic_partitions(consumer: Consumer, topic: str, timeout_s: float = 10.0) -> list[int]:
    """The topic's partitions, sorted; `TopicReadError` when the broker does not know it."""
    try:
        md = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
    except KafkaException as exc:
        raise TopicReadError(f"cannot read {topic}'s metadata: {exc}") from exc
    if md is None or md.error is not None:
        raise TopicReadError(f"cannot read {topic}: {md.error if md else 'no such topic'}")
    return sorted(md.partitions)


def end_offsets(consumer: Consumer, topic: str, timeout_s: float = 10.0) -> Bounds:
    """partition -> high watermark of every partition of `topic`."""
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)[1]
            for p in topic_partitions(consumer, topic, timeout_s)
        }
    except KafkaException as exc:
        raise TopicReadError(f"cannot read {topic}'s end offsets: {exc}") from exc


class ReadProgress:
    """Per partition: the bound to read up to (exclusive) and how far the read has come."""

    def __init__(self, bounds: Mapping[int, int]) -> None:
        self.bounds: Bounds = dict(bounds)
        self.position: Bounds = {p: 0 for p in self.bounds}
        self.pending = {p for p, end in self.bounds.items() if end > 0}

    @property
    def done(self) -> bool:
        return not self.pending

    def below(self, partition: int, offset: int) -> bool:
        """Whether a message lies inside the read (its offset is below its partition's bound)."""
        return offset < self.bounds.get(partition, 0)

    def saw(self, partition: int, offset: int) -> None:
        """A message at `offset` arrived: everything before it has been read."""
        self.reached(partition, offset + 1)

    def reached(self, partition: int, position: int) -> None:
        """The next offset the partition will deliver is `position`."""
        if position > self.position.get(partition, 0):
            self.position[partition] = position
        if position >= self.bounds.get(partition, 0):
            self.pending.discard(partition)

    def describe(self) -> str:
        """The partitions left behind, for an error message: `partition 0 at 3 of 10`."""
        return ", ".join(
            f"partition {p} at {self.position.get(p, 0)} of {self.bounds[p]}"
            for p in sorted(self.pending)
        )


@dataclass(frozen=True, slots=True)
class Change:
    """One decoded message: an event, or the removal of `key` (a tombstone)."""

    key: str | None
    event: Event | None
    message: Message


@dataclass
class Decoder:
    """Decodes messages of `spec`'s topic; malformed ones are skipped and counted.

    Tombstones (no value) are removals on a compacted topic and malformed elsewhere, unless
    `tombstones` says otherwise. `on_malformed(message, reason)` lets a caller dead-letter.
    """

    spec: TopicSpec
    tombstones: bool | None = None
    on_malformed: Callable[[Message, str], None] | None = None
    skipped: int = 0
    last_reason: str = ""

    def __post_init__(self) -> None:
        if self.tombstones is None:
            self.tombstones = "compact" in self.spec.cleanup_policy

    def __call__(self, messages: Iterable[Message]) -> list[Change]:
        out: list[Change] = []
        for msg in messages:
            raw_key = msg.key()
            key = raw_key.decode("utf-8", errors="replace") if raw_key is not None else None
            value = msg.value()
            if value is None and self.tombstones:
                if key is None:
                    self._malformed(msg, "tombstone without a key")
                else:
                    out.append(Change(key, None, msg))
                continue
            try:
                event = codecs.decode(self.spec, value)
            except SchemaError as exc:
                self._malformed(msg, exc.reason)
                continue
            out.append(Change(key, event, msg))
        return out

    def _malformed(self, msg: Message, reason: str) -> None:
        self.skipped += 1
        self.last_reason = reason
        if self.on_malformed is not None:
            self.on_malformed(msg, reason)


class TopicReader:
    """An assigned consumer reading `topic` from its beginning up to bounds taken at start.

    `until` gives the bounds instead (partition -> offset, exclusive; a partition it leaves
    out is not read). `config` adds consumer settings (e.g. `fetch.max.bytes`). With
    `raise_on_error`, a partition error stops the read (`TopicReadError`); otherwise it is
    skipped, as librdkafka retries most of them itself.
    """

    def __init__(
        self,
        bootstrap: str | Mapping[str, Any],
        topic: str | TopicSpec,
        *,
        group: str = "streamrec-topic-reader",
        until: Mapping[int, int] | None = None,
        config: Mapping[str, Any] | None = None,
        timeout_s: float = 10.0,
        raise_on_error: bool = False,
    ) -> None:
        self.spec = topic if isinstance(topic, TopicSpec) else None
        self.topic = topic.name if isinstance(topic, TopicSpec) else topic
        self.raise_on_error = raise_on_error
        self.decoder = Decoder(self.spec) if self.spec is not None else None
        # A mapping is the client's connection settings (`Settings.kafka_config()`: bootstrap
        # and security), a string a bare address.
        connection = {"bootstrap.servers": bootstrap} if isinstance(bootstrap, str) else bootstrap
        self._consumer = Consumer(
            {
                **connection,
                "group.id": group,  # librdkafka wants one; never joined (assigned) nor committed
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                **(config or {}),
            }
        )
        try:
            if until is None:
                bounds = end_offsets(self._consumer, self.topic, timeout_s)
            else:
                known = topic_partitions(self._consumer, self.topic, timeout_s)
                bounds = {p: until[p] for p in known if p in until}
            self.progress = ReadProgress(bounds)
            self._consumer.assign(
                [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in sorted(bounds)]
            )
        except BaseException:
            self._consumer.close()
            raise

    @property
    def bounds(self) -> Bounds:
        return self.progress.bounds

    @property
    def caught_up(self) -> bool:
        """Every partition has been read up to its bound."""
        return self.progress.done

    @property
    def skipped(self) -> int:
        """Malformed messages `decode` has skipped so far."""
        return self.decoder.skipped if self.decoder is not None else 0

    def decode(self, messages: Iterable[Message]) -> list[Change]:
        if self.decoder is None:
            raise TypeError(f"reader of {self.topic} was given a topic name, not its spec")
        return self.decoder(messages)

    def poll(self, max_messages: int = 1000, timeout_s: float = 0.5) -> list[Message]:
        """The next messages (past the bounds too: a follower keeps reading), in offset order
        per partition; updates the progress."""
        try:
            got = self._consumer.consume(max_messages, timeout=timeout_s)
        except KafkaException as exc:
            raise TopicReadError(f"cannot read {self.topic}: {exc}") from exc
        out: list[Message] = []
        for msg in got:
            err = msg.error()
            if err is None:
                self.progress.saw(msg.partition(), msg.offset())
                out.append(msg)
            elif err.code() == KafkaError._PARTITION_EOF:
                self.progress.reached(msg.partition(), msg.offset())
            elif self.raise_on_error or err.fatal():
                raise TopicReadError(f"cannot read {self.topic}: {err}")
        if not self.progress.done:
            # Compaction or transaction markers can leave the offsets below a bound empty.
            for tp in self._consumer.position(self._pending_tps()):
                if tp.offset >= 0:
                    self.progress.reached(tp.partition, tp.offset)
        return out

    def _pending_tps(self) -> list[TopicPartition]:
        return [TopicPartition(self.topic, p) for p in sorted(self.progress.pending)]

    def read_to_end(self, timeout_s: float = 60.0, batch: int = 5000) -> Iterator[list[Message]]:
        """Batches of exactly the messages below the bounds, until all are read."""
        for msgs in self._until_done(timeout_s, batch):
            inside = [m for m in msgs if self.progress.below(m.partition(), m.offset())]
            if inside:
                yield inside

    def catch_up(self, timeout_s: float = 60.0, batch: int = 5000) -> Iterator[list[Message]]:
        """Batches of every message read until the bounds are reached (some may lie past
        them: newer state, for a reader that goes on following with `poll`)."""
        yield from self._until_done(timeout_s, batch)

    def _until_done(self, timeout_s: float, batch: int) -> Iterator[list[Message]]:
        deadline = time.monotonic() + timeout_s
        while not self.progress.done:
            if time.monotonic() > deadline:
                raise TopicReadTimeout(
                    f"{self.topic} not read to its end offsets in {timeout_s:.0f} s: "
                    f"{self.progress.describe()}"
                )
            msgs = self.poll(batch, timeout_s=0.5)
            if msgs:
                yield msgs

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Table:
    """A compacted topic's latest value per key, and how many messages were malformed."""

    rows: dict[str, Event] = field(default_factory=dict)
    skipped: int = 0


def apply_changes(rows: dict[str, Event], changes: Iterable[Change]) -> None:
    """Latest value per key: an event replaces the key's value, a tombstone removes the key."""
    for change in changes:
        if change.key is None:
            continue
        if change.event is None:
            rows.pop(change.key, None)
        else:
            rows[change.key] = change.event


def read_table(
    bootstrap: str | Mapping[str, Any],
    spec: TopicSpec,
    *,
    group: str = "streamrec-table-reader",
    timeout_s: float = 60.0,
) -> Table:
    """`spec`'s topic read to its current end as key -> latest decoded value."""
    table = Table()
    with TopicReader(bootstrap, spec, group=group) as reader:
        for msgs in reader.read_to_end(timeout_s):
            apply_changes(table.rows, reader.decode(msgs))
        table.skipped = reader.skipped
    return table


class TableFollower:
    """A compacted topic read from its beginning and then followed, on a daemon thread: each
    record goes to `apply`, each tombstone's key to `forget`. `loaded` is set once the reader
    has caught up with the end offsets it saw at start. Every follower reads with a group of
    its own and commits nothing (every process holds the whole table). While the broker is
    unreachable it retries once a second; an outage later leaves what was applied in place."""

    def __init__(
        self,
        settings: Settings,
        topic: TopicSpec,
        name: str,
        poll_timeout_s: float = 0.2,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.name = name
        self.poll_timeout_s = poll_timeout_s
        self.config = dict(config or {})
        self.loaded = threading.Event()
        self.applied = 0
        self.skipped = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def apply(self, event: Any) -> None:
        raise NotImplementedError

    def forget(self, key: str) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
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
                for change in reader.decode(reader.poll(1000, timeout_s=self.poll_timeout_s)):
                    if change.event is not None:
                        self.apply(change.event)
                    elif change.key is not None:  # a tombstone: the record was deleted
                        self.forget(change.key)
                    self.applied += 1
                self.skipped = reader.skipped
                if reader.caught_up:
                    self.loaded.set()
        finally:
            reader.close()

    def _open(self) -> TopicReader | None:
        while not self._stop.is_set():
            try:
                return TopicReader(
                    self.settings.kafka_config(),
                    self.topic,
                    group=f"{self.name}-{uuid.uuid4().hex[:8]}",
                    config=self.config,
                    timeout_s=5.0,
                )
            except TopicReadError:
                self._stop.wait(1.0)  # broker not up yet: try again
        return None
