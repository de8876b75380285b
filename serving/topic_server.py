"""The request-topic server: recs.requests in, answers out on each request's reply topic.

Responsibilities:
- consume recs.requests in the serving consumer group (any number of workers share the
  topic) on a thread of its own, and hand each valid `RecRequest` to the same core the HTTP
  API uses, on the worker's event loop; at most `topic_concurrency` requests are in flight
  (the thread stops polling until one finishes: backpressure rather than an unbounded queue);
- the request's budget counts the time it already spent in the topic (from `sent_at`);
- reply with a `RecResponse` carrying the request's correlation id, keyed by it, on the topic
  the request names, through a `latency_producer` (`linger.ms=0`);
- shed by admission: the request topic has no 503, so a shed request is answered from the
  trending list held in memory (level POPULAR), which costs no dependency call.

Failure policy: a malformed message (not JSON, wrong schema) goes to dead.letters with the
reason and the server carries on; a reply the broker refuses is counted and logged.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Future
from datetime import UTC, datetime

from confluent_kafka import Consumer, KafkaError, KafkaException, Message

from streamrec.infra.settings import Settings
from streamrec.serving.errors import Overloaded
from streamrec.serving.schemas import RecQuery
from streamrec.serving.worker import ServingWorker
from streamrec.streams import codecs
from streamrec.streams.dead_letters import dead_letter
from streamrec.streams.producer import latency_producer
from streamrec.topics import DEAD_LETTERS, RECS_REQUESTS, RECS_RESPONSES, RecRequest, RecResponse
from streamrec.topics.errors import SchemaError

log = logging.getLogger(__name__)
PROCESSOR = "serving"


class TopicServer:
    def __init__(self, settings: Settings, worker: ServingWorker) -> None:
        self.settings = settings
        self.worker = worker
        self.cfg = settings.serving
        # Delivery reports only for failures (all _delivered acts on): no callback per reply.
        self.producer = latency_producer(
            settings, **{"client.id": "serving-replies", "delivery.report.only.error": True}
        )
        self.slots = threading.Semaphore(self.cfg.topic_concurrency)
        self.answered = 0
        self.dead = 0
        self.reply_failures = 0
        self.assigned = threading.Event()
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._consumer_thread: threading.Thread | None = None
        self._poller_thread: threading.Thread | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._consumer_thread = threading.Thread(target=self._consume, name="recs-requests")
        self._poller_thread = threading.Thread(target=self._poll_producer, name="recs-replies")
        self._consumer_thread.daemon = self._poller_thread.daemon = True
        self._consumer_thread.start()
        self._poller_thread.start()

    async def stop(self) -> None:
        self._stop.set()
        for thread in (self._consumer_thread, self._poller_thread):
            if thread is not None:
                await asyncio.to_thread(thread.join, 10)
        await asyncio.to_thread(self.producer.flush, 5)
        self.producer = None  # type: ignore[assignment] - release the librdkafka handle

    # --- consuming -------------------------------------------------------------------------

    def _consume(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap,
                "group.id": self.cfg.consumer_group,
                "client.id": "serving-requests",
                "auto.offset.reset": "latest",
                "enable.auto.commit": True,
                "fetch.wait.max.ms": self.cfg.topic_fetch_wait_ms,
                "session.timeout.ms": 10_000,
            }
        )
        consumer.subscribe([RECS_REQUESTS.name], on_assign=lambda c, parts: self.assigned.set())
        try:
            while not self._stop.is_set():
                msg = consumer.poll(0.1)
                if msg is None:
                    continue
                if msg.error():
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        log.warning("recs.requests: %s", msg.error())
                    continue
                self._dispatch(msg)
        finally:
            consumer.close()

    def _dispatch(self, msg: Message) -> None:
        try:
            request = codecs.decode_json(RecRequest, msg.value())
        except SchemaError as exc:
            self._dead_letter(msg, exc.reason)
            return
        while not self.slots.acquire(timeout=0.1):
            if self._stop.is_set():
                return
        assert self._loop is not None
        future: Future[None] = asyncio.run_coroutine_threadsafe(self._answer(request), self._loop)
        future.add_done_callback(lambda _: self.slots.release())

    def _dead_letter(self, msg: Message, reason: str) -> None:
        letter = dead_letter(
            source_topic=msg.topic(),
            processor=PROCESSOR,
            reason=reason,
            value=msg.value(),
            key=msg.key(),
            partition=msg.partition(),
            offset=msg.offset(),
        )
        self._produce(
            DEAD_LETTERS.name, DEAD_LETTERS.key_of(letter), codecs.encode(DEAD_LETTERS, letter)
        )
        self.dead += 1
        self.worker.metrics.dead_letters.inc()

    # --- answering -------------------------------------------------------------------------

    async def _answer(self, request: RecRequest) -> None:
        recommender = self.worker.recommender
        assert recommender is not None
        age_ms = (datetime.now(UTC) - request.sent_at).total_seconds() * 1000.0
        query = RecQuery(
            request_id=request.correlation_id,
            user_id=request.user_id,
            k=request.k,
            priority=request.priority,
            recent_item_ids=tuple(request.recent_item_ids),
            budget_ms=int(min(10_000, max(5.0, request.budget_ms - max(0.0, age_ms)))),
            channel="kafka",
        )
        try:
            response = await recommender.recommend(query)
        except Overloaded:
            self.worker.metrics.rejected.labels("kafka", "overloaded").inc()
            response = recommender.popular_answer(query)
        except Exception:  # a bug: log it, and let the client's timeout speak
            log.exception("request %s failed", request.correlation_id)
            return
        self._reply(request.reply_to, response)

    def _reply(self, topic: str, response: RecResponse) -> None:
        self._produce(topic, RECS_RESPONSES.key_of(response), codecs.encode_json(response))
        self.answered += 1

    def _produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        producer = self.producer
        if producer is None:  # stopped: nothing more goes out
            return
        try:
            producer.produce(topic, key=key, value=value, on_delivery=self._delivered)
        except (BufferError, KafkaException) as exc:
            self.reply_failures += 1
            log.warning("reply to %s not produced: %s", topic, exc)

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.reply_failures += 1
            log.warning("reply to %s not delivered: %s", msg.topic(), err)

    def _poll_producer(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.05)  # delivery callbacks; stop() joins this before dropping it
