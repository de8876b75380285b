"""Interaction counter: the smallest real processor, and the backbone's liveness probe.

Consumes events.interactions in batches, validates each message against its schema and adds
the number of valid events to a Redis counter (`streamrec:count:<group>`), which the replay
benchmark and the integration tests read to see what a Faust agent consumed end to end.

Failure policy: a malformed message goes to dead.letters with the reason; the agent goes on.
"""

from __future__ import annotations

import time

import faust
import redis.asyncio as aioredis

from streamrec.infra.settings import Settings
from streamrec.streams import codecs, metrics
from streamrec.streams.app import create_app, faust_topic
from streamrec.streams.dead_letters import FaustDeadLetters
from streamrec.topics import EVENTS_INTERACTIONS
from streamrec.topics.errors import SchemaError

NAME = "interaction-counter"


def counter_key(group: str, dead: bool = False) -> str:
    """Valid events counted by `group`; with `dead`, those sent to dead.letters."""
    return f"streamrec:count:{group}" + (":dead" if dead else "")


def build(settings: Settings, group: str | None = None) -> faust.App:
    group = group or f"streamrec-{NAME}"
    app = create_app(settings, group)
    metrics.attach(app, settings, NAME)  # /metrics + heartbeat in Redis while the worker runs
    source = faust_topic(app, EVENTS_INTERACTIONS)
    dead_letters = FaustDeadLetters(app, NAME)
    store = aioredis.from_url(settings.redis_url)
    key, dead_key = counter_key(group), counter_key(group, dead=True)

    @app.agent(source, name=NAME)
    async def count(stream: faust.StreamT) -> None:
        processed = metrics.EVENTS_PROCESSED.labels(NAME, EVENTS_INTERACTIONS.name)
        failed = metrics.EVENTS_FAILED.labels(NAME, EVENTS_INTERACTIONS.name, "schema")
        latency = metrics.PROCESSING_SECONDS.labels(NAME)
        async for batch in stream.take_events(2000, within=0.1):
            started = time.perf_counter()
            valid = dead = 0
            for event in batch:
                try:
                    codecs.decode(EVENTS_INTERACTIONS, event.value)
                except SchemaError as exc:
                    await dead_letters.send(event, exc.reason)
                    dead += 1
                else:
                    valid += 1
            async with store.pipeline(transaction=False) as pipe:
                pipe.incrby(key, valid)
                pipe.incrby(dead_key, dead)
                await pipe.execute()
            processed.inc(valid)
            failed.inc(dead)
            latency.observe(time.perf_counter() - started)

    return app
