"""Table writes from inside a Faust batch (`stream.take_events`).

Faust routes a table write (its changelog message and its local store partition) by the
*current event*, a context variable the stream sets per event. A batch agent handles many
events, from several partitions, after the stream moved on, so before touching a table for
one event the processor makes that event current again. `as_current(event)` does that and
restores the previous value afterwards.

`DurableTable` lets the batch wait until its state updates are in the changelog before the
batch is acked (see its docstring for why faust's own flush is not enough), and lets a batch
write many keys without faust's per-key cost: `put` produces the changelog message through
a librdkafka producer; `persist`, after that producer's flush, writes the local store and
records the changelog offsets there as faust does per message
(docs/adr/0085-session-worker-state-path.md).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, cast

import faust
from confluent_kafka import KafkaError, Producer
from confluent_kafka import Message as KafkaMessage
from faust.stores import rocksdb
from faust.streams import _current_event
from faust.types import TP, EventT
from faust.types.tuples import FutureMessage

from streamrec.errors import StreamRecError
from streamrec.streams.producer import produce_many


@contextmanager
def as_current(event: EventT) -> Iterator[None]:
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class ChangelogError(StreamRecError):
    """A state update could not be written to the table's changelog."""


class DurableTable(faust.Table):
    """A Faust table whose changelog sends can be awaited before a batch is acked.

    faust commits a batch's offsets after `producer.flush()`, but its send buffer's flush gives
    up after 100 ms without progress (faust-streaming 0.15.3 `ProducerBuffer.flush_atmost`),
    so on a busy machine offsets could be committed while state updates were still
    unsent; a worker stopped then loses them and the next owner of the partition recovers
    stale state. `changelog_sent()` waits for the broker's acknowledgement of every changelog
    message sent since the last call.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._unsent: list[FutureMessage] = []
        self._pending: list[tuple[int, bytes, bytes]] = []  # (partition, key, value) of `put`
        self._delivered: dict[int, int] = {}  # changelog partition -> highest offset acked
        self._failed: list[KafkaError] = []
        super().__init__(*args, **kwargs)

    def put(self, producer: Producer, partition: int, key: bytes, value: bytes) -> None:
        """`table[key] = value` for an event of source partition `partition`, without faust's
        per-key path: the changelog message (same topic, partition, key and value bytes as
        faust's own: this table's serializers are raw) goes through `producer`, and the local
        store is written by `persist` once that producer was flushed. Only for tables of raw
        bytes without windows."""
        self._pending.append((partition, key, value))
        while True:
            try:
                producer.produce(
                    self.changelog_topic_name,
                    key=key,
                    value=value,
                    partition=partition,
                    on_delivery=self._on_put_delivered,
                )
                return
            except BufferError:
                producer.poll(0.1)  # librdkafka's queue is full: let deliveries drain

    def put_many(self, producer: Producer, states: Mapping[bytes, tuple[int, bytes]]) -> None:
        """`put` of every key -> (partition, value) of a batch, one produce call per changelog
        partition. confluent-kafka's `produce_batch` ignores a message's own `partition`
        (the partitioner placed them: seen in the changelog test), so each call names it."""
        by_partition: dict[int, list[dict[str, Any]]] = {}
        for key, (partition, value) in states.items():
            self._pending.append((partition, key, value))
            by_partition.setdefault(partition, []).append({"key": key, "value": value})
        for partition, messages in by_partition.items():
            produce_many(
                producer,
                self.changelog_topic_name,
                messages,
                on_delivery=self._on_put_delivered,
                partition=partition,
            )

    def _on_put_delivered(self, err: KafkaError | None, msg: KafkaMessage) -> None:
        if err is not None:
            self._failed.append(err)
            return
        partition, offset = msg.partition(), msg.offset()
        if offset > self._delivered.get(partition, -1):
            self._delivered[partition] = offset

    def persist(self) -> None:
        """After the `put`s' producer was flushed: raise if a changelog message failed; else
        write the values to the local store, then record the highest acked offset of each
        changelog partition there (what faust's `_on_changelog_sent` does per message), so a
        restart recovers from that offset on. The local store is written only after the
        changelog has the values, so it is never ahead of the changelog (a worker killed
        before this point recovers its old states, and the redelivered batch is redone)."""
        pending, self._pending = self._pending, []
        failed, self._failed = self._failed, []
        delivered, self._delivered = self._delivered, {}
        if failed:
            raise ChangelogError(f"{len(failed)} changelog messages failed: {failed[0]}")
        data = self.data
        if isinstance(data, rocksdb.Store):
            index = data._key_index
            for partition, key, value in pending:
                index[key] = partition
                data._db_for_partition(partition).put(key, value)
        else:  # the memory store (rocksdict missing): a plain mapping
            for _partition, key, value in pending:
                data[key] = value
        topic = self.changelog_topic_name
        for partition, offset in delivered.items():
            data.set_persisted_offset(TP(topic, partition), offset)

    def send_changelog(self, *args: Any, **kwargs: Any) -> FutureMessage:
        fut = super().send_changelog(*args, **kwargs)
        self._unsent.append(fut)
        return fut

    async def changelog_sent(self) -> None:
        unsent, self._unsent = self._unsent, []
        if unsent:
            await asyncio.gather(*unsent)


def durable_table(app: faust.App, name: str, **kwargs: Any) -> DurableTable:
    """`app.Table(name, **kwargs)`, as a `DurableTable`."""
    table = DurableTable(app, name=name, beacon=app.tables.beacon, **kwargs)
    return cast(DurableTable, app.tables.add(table))
