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
  trending list held in memory (level POPULAR), which costs no dependency call;
- commit a request's offset only once its reply (or dead letter) is delivered, below every
  request still in flight (`streams.offsets.PendingOffsets`): a process killed mid-request
  loses nothing, the group's next owner of the partition answers it again.

Failure policy: every request ends in exactly one of a reply, a POPULAR answer (shed), or a
dead letter carrying the reason, and the server carries on. Dead-lettered are: a request over
its producer principal's or its user's rate limit (`serving.rate_limit`, with auth on), a malformed
message (not JSON, wrong schema), a `reply_to` that matches none of `serving.reply_topics`
(the client chooses the topic: it must not write into another topic, nor make the broker
create one), a failure while answering (logged with its traceback), and a reply the broker
refuses (logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime
from fnmatch import fnmatchcase

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streamrec.infra.settings import Settings
from streamrec.serving.answer import Answer
from streamrec.serving.errors import Overloaded
from streamrec.serving.rate_limit import Limits
from streamrec.serving.schemas import RecQuery
from streamrec.serving.worker import ServingWorker
from streamrec.streams import codecs
from streamrec.streams.decoding import Decoder
from streamrec.streams.offsets import Partition, PendingOffsets
from streamrec.streams.producer import latency_producer
from streamrec.topics import (
    DEAD_LETTERS,
    RECS_REQUESTS,
    RECS_RESPONSES,
    DeadLetter,
    RecRequest,
)

log = logging.getLogger(__name__)
PROCESSOR = "serving"


class TopicServer:
    def __init__(
        self, settings: Settings, worker: ServingWorker, limits: Limits | None = None
    ) -> None:
        self.settings = settings
        self.worker = worker
        self.cfg = settings.serving
        # The HTTP API's limits (shared buckets), per producer principal and user asked for;
        # with auth on and none given (the topic-only server), its own.
        self._own_limits = limits is None and settings.auth.mode == "on"
        self.limits = Limits(settings) if self._own_limits else limits
        self.limited = 0
        # A delivery report per reply: the request's offset is committed on it.
        # A reply topic the broker does not have fails in 5 s rather than librdkafka's 30 s
        # (the request is then dead-lettered): the client creates its topic before asking.
        self.producer = latency_producer(
            settings,
            **{"client.id": "serving-replies", "topic.metadata.propagation.max.ms": 5000},
        )
        self.pending = PendingOffsets()
        self._to_store: dict[Partition, int] = {}
        self._to_store_lock = threading.Lock()
        self.slots = threading.Semaphore(self.cfg.topic_concurrency)
        self._reply_patterns = self.cfg.reply_patterns
        self.answered = 0
        # A malformed request: dead-lettered through the reply producer, counted in
        # serving's own registry.
        self._decode: Decoder[RecRequest] = Decoder(
            RECS_REQUESTS, PROCESSOR, self, failed=worker.metrics.dead_letters
        )
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
        if self._own_limits and self.limits is not None:
            await self.limits.aclose()

    # --- consuming -------------------------------------------------------------------------

    def _consume(self) -> None:
        consumer = Consumer(
            {
                **self.settings.kafka_config(),
                "group.id": self.cfg.consumer_group,
                "client.id": "serving-requests",
                "auto.offset.reset": "latest",
                "enable.auto.commit": True,
                # Offsets are stored by hand once a reply is delivered (`_finished`).
                "enable.auto.offset.store": False,
                "fetch.wait.max.ms": self.cfg.topic_fetch_wait_ms,
                "socket.nagle.disable": True,  # requests and replies are small writes
                "session.timeout.ms": 10_000,
            }
        )
        consumer.subscribe(
            [RECS_REQUESTS.name],
            on_assign=lambda c, parts: self.assigned.set(),
            on_revoke=self._revoked,
            on_lost=self._revoked,
        )
        try:
            while not self._stop.is_set():
                self._store_finished(consumer)
                msg = consumer.poll(0.1)
                if msg is None:
                    continue
                if msg.error():
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        log.warning("recs.requests: %s", msg.error())
                    continue
                self._dispatch(msg)
        finally:
            self._store_finished(consumer)
            consumer.close()

    @property
    def dead(self) -> int:
        """Malformed requests sent to dead.letters."""
        return self._decode.dead

    def _revoked(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        self._store_finished(consumer)  # committed with the revocation
        revoked = [(p.topic, p.partition) for p in parts]
        self.pending.revoke(revoked)
        with self._to_store_lock:
            for tp in revoked:
                self._to_store.pop(tp, None)

    def _finished(self, tp: Partition, offset: int) -> None:
        """A request's outcome is delivered (on the producer's thread): its offset may be
        stored once nothing before it is open. The consumer's thread stores it: a
        `store_offsets` from another thread waits while that one is in `poll`."""
        commit = self.pending.finish(tp, offset)
        if commit is not None:
            with self._to_store_lock:
                self._to_store[tp] = max(commit, self._to_store.get(tp, 0))

    def _store_finished(self, consumer: Consumer) -> None:
        with self._to_store_lock:
            ready, self._to_store = self._to_store, {}
        if ready:
            # Revoked meanwhile: the next owner answers those again from the last commit.
            with contextlib.suppress(KafkaException):
                consumer.store_offsets(
                    offsets=[TopicPartition(t, p, o) for (t, p), o in ready.items()]
                )

    def _dispatch(self, msg: Message) -> Future[None] | None:
        """Decode and check a request, then answer it on the event loop (the future of that),
        or dead-letter it (None). Nothing raised here is lost: the message is dead-lettered
        with the reason, so every request ends in a reply or a dead letter."""
        tp, offset = (msg.topic() or "", msg.partition() or 0), msg.offset() or 0
        self.pending.begin(tp, offset)
        try:
            request = self._decode(msg)
            if request is None:
                return None  # dead-lettered: finished when the dead letter is delivered
            if not self._may_reply_to(request.reply_to):
                self._decode.reject(
                    msg,
                    f"reply_to {request.reply_to!r} matches none of serving.reply_topics "
                    f"({self.cfg.reply_topics}): the request cannot be replied to",
                )
                return None
            while not self.slots.acquire(timeout=0.1):
                if self._stop.is_set():
                    return None  # stopping: uncommitted, the group's next owner answers it
            assert self._loop is not None
            try:
                future: Future[None] = asyncio.run_coroutine_threadsafe(
                    self._answer(request, msg), self._loop
                )
            except BaseException:
                self.slots.release()
                raise
            future.add_done_callback(lambda _: self.slots.release())
            return future
        except Exception as exc:
            self._failed(msg, exc)
            return None

    def _may_reply_to(self, topic: str) -> bool:
        # A reply_to is the client's choice: only the allow-listed topics, so a request cannot
        # write into catalog.items (or make the broker create a topic).
        return any(fnmatchcase(topic, pattern) for pattern in self._reply_patterns)

    def _failed(self, msg: Message, exc: BaseException) -> None:
        """A request that could not be answered (a bug or a dead dependency): logged with its
        traceback and dead-lettered with the reason."""
        log.error(
            "request at %s[%s]@%s failed", msg.topic(), msg.partition(), msg.offset(), exc_info=exc
        )
        try:
            self._decode.reject(msg, f"failed while answering: {type(exc).__name__}: {exc}")
        except Exception:
            log.exception(
                "request at %s[%s]@%s not dead-lettered", msg.topic(), msg.partition(), msg.offset()
            )
            self._finished((msg.topic() or "", msg.partition() or 0), msg.offset() or 0)

    def send(self, letter: DeadLetter) -> None:
        """The dead-letter sink of `_decode`: through the reply producer. The letter carries
        its request's coordinates, whose offset is finished once it is delivered."""
        source = ((letter.source_topic, letter.partition or 0), letter.offset or 0)
        self._produce(
            DEAD_LETTERS.name,
            DEAD_LETTERS.key_of(letter),
            codecs.encode(DEAD_LETTERS, letter),
            source,
        )

    # --- answering -------------------------------------------------------------------------

    async def _answer(self, request: RecRequest, msg: Message) -> None:
        try:
            recommender = self.worker.recommender
            if recommender is None:
                raise RuntimeError("the serving worker is not started")
            if self.limits is not None:
                wait_s = await self.limits.topic(request.principal, request.user_id)
                if wait_s is not None:
                    self.limited += 1
                    self.worker.metrics.rejected.labels("kafka", "rate limited").inc()
                    self._decode.reject(
                        msg,
                        f"rate limit of principal {request.principal!r} exceeded: "
                        f"retry in {wait_s:.1f} s",
                    )
                    return
            age_ms = (datetime.now(UTC) - request.sent_at).total_seconds() * 1000.0
            query = RecQuery(
                request_id=request.correlation_id,
                user_id=request.user_id,
                k=request.k,
                priority=request.priority,
                recent_item_ids=tuple(request.recent_item_ids),
                budget_ms=int(min(10_000, max(5.0, request.budget_ms - max(0.0, age_ms)))),
                channel="kafka",
                principal=f"topic:{request.principal}",
            )
            try:
                response = await recommender.recommend(query)
            except Overloaded:
                self.worker.metrics.rejected.labels("kafka", "overloaded").inc()
                response = recommender.popular_answer(query)
            self._reply(request.reply_to, response, msg)
        except Exception as exc:  # a bug or a dead dependency: logged and dead-lettered
            self._failed(msg, exc)

    def _reply(self, topic: str, response: Answer, msg: Message) -> None:
        # The RecResponse contract, written from the answer's arrays (serving.answer).
        source = ((msg.topic() or "", msg.partition() or 0), msg.offset() or 0)

        def undelivered(reason: str) -> None:
            # E.g. an allowed name the broker has no topic for: the request is dead-lettered
            # (whose delivery finishes its offset), rather than dropped.
            self._decode.reject(msg, f"reply to {topic!r} not delivered: {reason}")

        self._produce(
            topic, RECS_RESPONSES.key_of(response), response.response_json(), source, undelivered
        )
        self.answered += 1

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        source: tuple[Partition, int] | None = None,
        undelivered: Callable[[str], None] | None = None,
    ) -> None:
        """Produce; once delivered (or refused, which is logged), `source` (the request's
        partition and offset) is finished, unless `undelivered` takes the refusal over."""
        producer = self.producer
        if producer is None:  # stopped: nothing more goes out, nor is its offset committed
            return

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                log.warning("reply to %s not delivered: %s", msg.topic(), err)
                if undelivered is not None:
                    try:
                        undelivered(str(err))
                        return
                    except Exception:
                        log.exception("request for %s not dead-lettered", topic)
            if source is not None:
                self._finished(*source)

        try:
            producer.produce(topic, key=key, value=value, on_delivery=delivered)
        except (BufferError, KafkaException) as exc:
            log.warning("reply to %s not produced: %s", topic, exc)
            if source is not None:
                self._finished(*source)

    def _poll_producer(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.05)  # delivery callbacks; stop() joins this before dropping it
