"""Impressions to recs.served, published without waiting for the broker.

Responsibilities: build the `Impression` of an answer (with the user's experiment variant,
`analytics.experiments.variant_for`, or "canary" for a ranker canary's users), hand it to
a producer that lingers `serving.impressions_linger_ms` (500 ms: ADRs 0055, 0089, 0090)
and return at once; a daemon thread serves the producer's delivery callbacks, and a failed
delivery is counted in the metrics (an impression is analytics, never a reason to fail or
slow an answer). A full local queue drops the impression and counts it too.

The impressions of one turn of the event loop (a batch's answers come out together) leave
in ONE `produce_batch` call, each written with orjson from the answer's arrays: no pydantic
model and no producer call per answer (ADR 0092).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streamrec.analytics.experiments import variant_for
from streamrec.errors import ConfigError
from streamrec.infra.settings import Settings
from streamrec.serving.ids import new_id
from streamrec.serving.metrics import ServingMetrics
from streamrec.streams.producer import latency_producer
from streamrec.topics import RECS_SERVED
from streamrec.topics.base import utcnow

if TYPE_CHECKING:
    from streamrec.serving.answer import Answer


class ImpressionPublisher:
    def __init__(self, settings: Settings, metrics: ServingMetrics):
        self.settings = settings
        self.metrics = metrics
        # Delivery reports only for failures (what _delivered counts): no Python callback per
        # delivered impression on the poll thread, which would take the GIL once per answer.
        # A linger: impressions are analytics, and with linger.ms=0 every answer woke
        # librdkafka's broker thread for a one-message request (a futex wake on the event
        # loop's thread and ~0.2 ms of broker-thread CPU per answer; ADR 0055). 500 ms cut the
        # broker's own CPU per answer to a third of 50 ms's (ADRs 0089, 0090): a CPU the
        # answers share. The answer never waits for it; the analytics see it 0.5 s later.
        self.producer: Producer = latency_producer(
            settings,
            **{
                "client.id": "serving-served",
                "delivery.report.only.error": True,
                "linger.ms": settings.serving.impressions_linger_ms,
            },
        )
        self.sent = 0
        # The model manager's canary assignment (in memory): its users' impressions say so.
        self.variant_override: Callable[[str], str | None] | None = None
        self._pending: list[dict[str, Any]] = []  # this loop turn's impressions
        self._flush_scheduled = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="impressions", daemon=True)
        self._thread.start()

    def _variant(self, user_id: str) -> str:
        """The user's A/B variant (the experiments' stable hash assignment); "control" if unset."""
        override = self.variant_override
        if override is not None:
            variant = override(user_id)
            if variant is not None:
                return variant
        try:
            return variant_for(self.settings, user_id)
        except ConfigError:
            return "control"

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.1)

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.metrics.impressions_failed.inc()

    def publish(self, response: Answer, channel: str, principal: str = "") -> None:
        """Queue the answer's impression; it leaves with the others of this loop turn (at
        once when called off the event loop)."""
        if self.producer is None:
            return
        # The `Impression` contract (topics.recs_served), written from the core's own
        # answer (checked where it was made): no model to build and validate again.
        impression = {
            "schema_version": 1,
            "event_id": new_id(),
            "request_id": response.correlation_id,
            "user_id": response.user_id,
            "item_ids": response.item_ids,
            "level": response.level,
            "model_version": response.model_version,
            "variant": self._variant(response.user_id),
            "channel": channel,
            "latency_ms": response.latency_ms,
            "served_at": utcnow(),
            "principal": principal,  # the audit trail: who asked
        }
        if response.explored:  # only then: an impression without it is the old contract's
            explored = response.explored
            impression["explored_item_ids"] = [i for i in response.item_ids if i in explored]
        value = orjson.dumps(impression)
        self._pending.append({"key": response.user_id.encode(), "value": value})
        if self._flush_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush_pending()
            return
        self._flush_scheduled = True
        loop.call_soon(self.flush_pending)

    def flush_pending(self) -> None:
        """Hand the queued impressions to the producer in one call."""
        self._flush_scheduled = False
        messages, self._pending = self._pending, []
        producer = self.producer
        if not messages or producer is None:
            return
        try:
            queued = producer.produce_batch(RECS_SERVED.name, messages, on_delivery=self._delivered)
        except (BufferError, KafkaException):
            queued = 0
        self.sent += queued
        if queued < len(messages):  # a full local queue: those are dropped, and counted
            self.metrics.impressions_failed.inc(len(messages) - queued)

    def close(self, timeout_s: float = 5.0) -> None:
        self.flush_pending()
        self._stop.set()
        self._thread.join(timeout=2)
        self.producer.flush(timeout_s)
        # librdkafka keeps reconnecting while the handle lives: drop it (publish is a no-op now).
        self.producer = None  # type: ignore[assignment]
