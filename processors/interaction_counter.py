"""Interaction counter: the smallest real processor, and the backbone's liveness probe.

Consumes events.interactions in batches, validates each message against its schema and adds
the number of valid events to a Redis counter (`streamrec:count:<group>`), which the replay
benchmark and the integration tests read to see what a Faust agent consumed end to end.

Failure policy: a malformed message goes to dead.letters with the reason; the agent goes on.
Any other failure (Redis, the broker) ends the worker before the batch is committed
(`streams.stop_on_failure`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import faust

from streamrec.infra.redis_clients import async_client
from streamrec.infra.settings import Settings
from streamrec.streams import metrics
from streamrec.streams.app import create_app, faust_topic
from streamrec.streams.dead_letters import FaustDeadLetters
from streamrec.streams.decoding import AgentDecoder
from streamrec.streams.stop_on_failure import stop_on_failure
from streamrec.streams.whole_batch import whole_batch
from streamrec.topics import EVENTS_INTERACTIONS, Interaction

NAME = "interaction-counter"


def counter_key(group: str, dead: bool = False) -> str:
    """Valid events counted by `group`; with `dead`, those sent to dead.letters."""
    return f"streamrec:count:{group}" + (":dead" if dead else "")


class InteractionCounter:
    """Validates a batch; returns the increments of the group's two Redis counters."""

    def __init__(self, group: str, decode: AgentDecoder[Interaction]) -> None:
        self.key, self.dead_key = counter_key(group), counter_key(group, dead=True)
        self.decode = decode

    async def handle(self, batch: Sequence[Any]) -> dict[str, int]:
        valid = dead = 0
        for event in batch:
            if await self.decode(event) is None:
                dead += 1
            else:
                valid += 1
        return {self.key: valid, self.dead_key: dead}


def build(settings: Settings, group: str | None = None) -> faust.App:
    group = group or f"streamrec-{NAME}"
    app = create_app(settings, group)
    metrics.attach(app, settings, NAME)  # /metrics + heartbeat in Redis while the worker runs
    source = faust_topic(app, EVENTS_INTERACTIONS)
    counter = InteractionCounter(
        group, AgentDecoder(EVENTS_INTERACTIONS, NAME, FaustDeadLetters(app))
    )
    store = async_client(settings)

    @app.agent(source, name=NAME)
    async def count(stream: faust.StreamT) -> None:
        processed = metrics.EVENTS_PROCESSED.labels(NAME, EVENTS_INTERACTIONS.name)
        latency = metrics.PROCESSING_SECONDS.labels(NAME)

        async def count_batch(batch: Sequence[Any]) -> dict[str, int]:
            increments = await counter.handle(batch)
            async with store.pipeline(transaction=False) as pipe:
                for key, n in increments.items():
                    pipe.incrby(key, n)
                await pipe.execute()
            return increments

        async for batch in stream.take_events(2000, within=0.1):
            started = time.perf_counter()
            with stop_on_failure(NAME):
                # A stop mid-batch waits for its increments (streams.whole_batch).
                increments = await whole_batch(count_batch(batch))
            processed.inc(increments[counter.key])
            latency.observe(time.perf_counter() - started)

    return app
