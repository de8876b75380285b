"""A client of the request topic: send a `RecRequest`, wait for the `RecResponse` with the same
correlation id on a reply topic of its own. The demo and the serving benchmark use it.

The serving workers' consumer group starts at the latest offset, so a request sent before
the group has joined is never answered: `ask_until_answered` repeats a request until one
comes back (the warm-up), `ask` sends once and waits.
"""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

from streamrec.infra.settings import Settings
from streamrec.streams import codecs
from streamrec.streams.producer import latency_producer
from streamrec.topics import RECS_REQUESTS, RECS_RESPONSES, RecRequest, RecResponse


class RequestTopicClient:
    """Owns a one-partition reply topic, a `linger.ms=0` producer and a reply consumer."""

    def __init__(self, settings: Settings, prefix: str = "client") -> None:
        # Under `recs.responses` (serving's default `reply_topics`), created here: the broker
        # creates no topic on its own.
        self.reply_to = f"{RECS_RESPONSES.name}.{prefix}.{uuid.uuid4().hex[:6]}"
        admin = AdminClient({**settings.kafka_config()})
        admin.create_topics([NewTopic(self.reply_to, 1, 1)])[self.reply_to].result(30)
        self.producer = latency_producer(settings)
        self.consumer = Consumer(
            {
                **settings.kafka_config(),
                "group.id": f"{prefix}-{uuid.uuid4().hex[:6]}",
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": settings.serving.topic_fetch_wait_ms,
                "socket.nagle.disable": True,  # requests and replies are small writes
            }
        )
        self.consumer.subscribe([self.reply_to])
        self._sent = 0

    def ask(self, user_id: str, timeout_s: float, k: int = 20) -> tuple[RecResponse, float] | None:
        """(the answer, round trip in ms), or None after `timeout_s`."""
        self._sent += 1
        cid = f"{self.reply_to}-{self._sent}"
        req = RecRequest(correlation_id=cid, user_id=user_id, reply_to=self.reply_to, k=k)
        t0 = time.perf_counter()
        self.producer.produce(
            RECS_REQUESTS.name, key=user_id.encode(), value=codecs.encode(RECS_REQUESTS, req)
        )
        self.producer.flush(5)
        while time.perf_counter() - t0 < timeout_s:
            msg = self.consumer.poll(0.05)
            if msg is None or msg.error():
                continue
            resp = codecs.decode_json(RecResponse, msg.value())
            if resp.correlation_id == cid:
                return resp, (time.perf_counter() - t0) * 1000
        return None

    def ask_until_answered(
        self, user_id: str, deadline_s: float, k: int = 20
    ) -> tuple[RecResponse, float]:
        """Repeat a request (1 s each) until serving answers; the first answer and its time."""
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            answer = self.ask(user_id, 1.0, k)
            if answer is not None:
                return answer
        raise TimeoutError(f"no reply on {RECS_REQUESTS.name} within {deadline_s:.0f} s")

    def close(self) -> None:
        self.consumer.close()
