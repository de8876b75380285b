"""confluent-kafka producers, in the two shapes StreamRec needs.

- `bulk_producer`: replays and backfills. Idempotent, acks=all, compressed, batched
  (librdkafka's linger and batch size from `ReplaySettings`).
- `latency_producer`: replies and impressions. `linger.ms=0` (librdkafka's default 5 ms would
  add to every request's latency).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from streamrec.infra.settings import Settings
from streamrec.streams import codecs
from streamrec.streams.errors import DeliveryError
from streamrec.topics import TopicSpec
from streamrec.topics.base import Event


def bulk_producer(settings: Settings, **overrides: Any) -> Producer:
    r = settings.replay
    config = {
        **settings.kafka_config(),
        "client.id": f"{settings.kafka.client_id}-bulk",
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": r.compression,
        "linger.ms": r.linger_ms,
        "batch.size": r.batch_size,
        "queue.buffering.max.messages": r.queue_max_messages,
        "queue.buffering.max.kbytes": 1_048_576,
    }
    config.update(overrides)
    return Producer(config)


def latency_producer(settings: Settings, **overrides: Any) -> Producer:
    config = {
        **settings.kafka_config(),
        "client.id": f"{settings.kafka.client_id}-fast",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 0,
        # Nagle's algorithm holds a small write until the previous one is acknowledged: with
        # the broker's delayed ACKs, a reply could wait up to ~40 ms for no reason.
        "socket.nagle.disable": True,
    }
    config.update(overrides)
    return Producer(config)


class DeliveryTracker:
    """Counts acknowledged and failed deliveries; the first failure is kept for the report."""

    def __init__(self) -> None:
        self.delivered = 0
        self.failed = 0
        self.first_error: KafkaError | None = None

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.failed += 1
            self.first_error = self.first_error or err

    def raise_if_failed(self) -> None:
        if self.failed:
            raise DeliveryError(f"{self.failed} messages not delivered: {self.first_error}")


def produce_event(
    producer: Producer,
    spec: TopicSpec,
    event: Event,
    on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
) -> None:
    """Encode `event` for `spec` and produce it keyed by the spec's key field."""
    produce(producer, spec, spec.key_of(event), codecs.encode(spec, event), on_delivery)


def produce(
    producer: Producer,
    spec: TopicSpec,
    key: bytes | None,
    value: bytes | None,
    on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
) -> None:
    """Produce raw bytes to `spec`'s topic (`value=None`: a tombstone), waiting for room
    when librdkafka's local queue is full."""
    kwargs: dict[str, Any] = {"key": key, "value": value}
    if on_delivery is not None:
        kwargs["on_delivery"] = on_delivery
    while True:
        try:
            producer.produce(spec.name, **kwargs)
            return
        except BufferError:
            producer.poll(0.05)  # local queue full: let deliveries drain, then retry


def produce_many(
    producer: Producer,
    topic: str,
    messages: list[dict[str, Any]],
    on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
    partition: int | None = None,
) -> None:
    """Produce a batch of messages (dicts of `key` and `value`) to `partition`, or where the
    producer's partitioner puts each key (as `produce` does), in one `produce_batch` call,
    then again for those librdkafka's full local queue refused, after letting deliveries
    drain. Any other refusal raises `DeliveryError`. (A message's own `partition` key is
    not honoured by `produce_batch`: pass `partition`.)"""
    kwargs: dict[str, Any] = {} if on_delivery is None else {"on_delivery": on_delivery}
    if partition is not None:
        kwargs["partition"] = partition
    while messages:
        producer.produce_batch(topic, messages, **kwargs)
        refused = [m for m in messages if "_error" in m]
        if not refused:
            return
        for m in refused:
            err = m.pop("_error")
            if err.code() != KafkaError._QUEUE_FULL:
                raise DeliveryError(f"{len(refused)} messages to {topic} refused: {err}")
        messages = refused
        producer.poll(0.05)  # local queue full: let deliveries drain, then retry


def flush(producer: Producer, timeout_s: float = 60.0) -> None:
    remaining = producer.flush(timeout_s)
    if remaining:
        raise DeliveryError(f"{remaining} messages still unacknowledged after {timeout_s:.0f} s")
