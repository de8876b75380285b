"""Candidates processor: every active user's candidate list kept fresh in Redis.

Responsibilities (the logic lives in `candidates/`; this module is the I/O around it):
- consume events.interactions: update the co-visitation counts and the users' recent items
  (`candidates.state`), and mark the users dirty;
- consume features.changed (the session features processor) and cache.invalidations
  (`user_candidates` refresh commands of the invalidation processor): mark the users dirty;
- consume registry.changes, and check the registry pointer every few seconds: load the
  promoted retriever when it changes (`candidates.loader`);
- every `debounce_ms / 2`, rebuild the users whose debounce window has passed
  (`candidates.builder`: two-tower ANN, co-visitation, content, trending; fused), write
  `cand:{user_id}` and publish a `CandidatesUpdated` summary to the candidates topic;
- before each rebuild, look for a new vector index snapshot (`candidates.content`: one
  `stat`, a load off the event loop when it changed), so items embedded since training
  reach the content source, and a refresh command sent for a new item finds it.

Failure policy: a malformed message (any input topic) goes to dead.letters with the reason
and the agent goes on. A rebuild that fails on Redis is logged and its users are marked
dirty again (retried at the next tick); any other failure is logged with its traceback and
those users wait for their next trigger. No retriever promoted yet means candidates from
co-visitation and trending only, with model_version "none"; a version that fails to load
is logged and the previous one kept. No index snapshot yet: the content source uses the
retriever's shipped vectors; an unreadable new snapshot is logged and the previous one kept.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

import faust
from redis.exceptions import RedisError

from streamrec.candidates.builder import CandidateBuilder
from streamrec.candidates.content import ContentSource
from streamrec.candidates.debounce import Debouncer
from streamrec.candidates.loader import RetrieverHolder
from streamrec.candidates.state import CandidateState
from streamrec.infra.redis_clients import async_client
from streamrec.infra.settings import Settings
from streamrec.streams import codecs, metrics
from streamrec.streams.app import create_app, faust_topic
from streamrec.streams.dead_letters import AsyncDeadLetterSink, FaustDeadLetters
from streamrec.streams.decoding import AgentDecoder
from streamrec.streams.stop_on_failure import stop_on_failure
from streamrec.topics import (
    CACHE_INVALIDATIONS,
    CANDIDATES,
    EVENTS_INTERACTIONS,
    FEATURES_CHANGED,
    REGISTRY_CHANGES,
    CandidatesUpdated,
    TopicSpec,
)
from streamrec.topics.stores import CandidateList

NAME = "candidates"
POINTER_CHECK_S = 2.0
log = logging.getLogger(__name__)


class History(Protocol):
    """Records interactions (co-visitation, recent items); returns the users they touched."""

    async def record(self, events: Sequence[Any]) -> set[str]: ...


class Builder(Protocol):
    """Builds and stores users' candidate lists (candidates.builder.CandidateBuilder)."""

    async def build(self, user_ids: Sequence[str]) -> list[CandidateList]: ...

    async def write(self, lists: Sequence[CandidateList]) -> list[CandidatesUpdated]: ...


class CandidatesProcessor:
    """What each input topic does to the set of users due a rebuild, and the rebuild."""

    def __init__(
        self,
        history: History,
        builder: Builder,
        debouncer: Debouncer,
        dead_letters: AsyncDeadLetterSink,
    ) -> None:
        self.history = history
        self.builder = builder
        self.debouncer = debouncer
        self.decoders: dict[str, AgentDecoder[Any]] = {
            spec.name: AgentDecoder(spec, NAME, dead_letters)
            for spec in (
                EVENTS_INTERACTIONS,
                FEATURES_CHANGED,
                CACHE_INVALIDATIONS,
                REGISTRY_CHANGES,
            )
        }

    async def _decode(self, spec: TopicSpec, batch: Sequence[Any]) -> list[Any]:
        good = [event for _, event in await self.decoders[spec.name].decode_all(batch)]
        metrics.EVENTS_PROCESSED.labels(NAME, spec.name).inc(len(good))
        return good

    async def on_interactions(self, batch: Sequence[Any]) -> None:
        events = await self._decode(EVENTS_INTERACTIONS, batch)
        if events:
            self.debouncer.mark(await self.history.record(events))

    async def on_features_changed(self, batch: Sequence[Any]) -> None:
        self.debouncer.mark({c.user_id for c in await self._decode(FEATURES_CHANGED, batch)})

    async def on_refresh_commands(self, batch: Sequence[Any]) -> None:
        commands = await self._decode(CACHE_INVALIDATIONS, batch)
        self.debouncer.mark({c.user_id for c in commands if c.target == "user_candidates"})

    async def on_registry_changes(self, batch: Sequence[Any]) -> bool:
        """True when a retriever was promoted or rolled back (reload it)."""
        return any(c.kind == "retriever" for c in await self._decode(REGISTRY_CHANGES, batch))

    def due(self) -> list[str]:
        return self.debouncer.due()

    async def rebuild(self, users: list[str]) -> list[CandidatesUpdated] | None:
        """Rebuild and store `users`' lists; their summaries, or None when it failed (on
        Redis: the users are marked dirty again; else they wait for their next trigger)."""
        try:
            return await self.builder.write(await self.builder.build(users))
        except RedisError as exc:
            log.error("rebuilding %d users failed, retrying: %s", len(users), exc)
            self.debouncer.mark(users)
        except Exception:  # a bug or a bad model must not stop the worker's other agents
            log.exception(
                "rebuilding %d users failed; they wait for their next trigger", len(users)
            )
        return None


def build(settings: Settings, group: str | None = None) -> faust.App:
    group = group or f"streamrec-{NAME}"
    cfg = settings.candidates
    app = create_app(settings, group)
    metrics.attach(app, settings, NAME)
    out = faust_topic(app, CANDIDATES)
    store = async_client(settings)
    state = CandidateState(store, cfg.history_len, cfg.covisit_window)
    holder = RetrieverHolder(settings)
    content = ContentSource(settings)
    builder = CandidateBuilder(cfg, store, state, None, settings.models.session_len, content)
    processor = CandidatesProcessor(
        state, builder, Debouncer(cfg.debounce_ms / 1000.0), FaustDeadLetters(app)
    )
    latency = metrics.PROCESSING_SECONDS.labels(NAME)

    def reload() -> None:
        if holder.refresh():
            builder.retriever = holder.model

    @app.task
    async def load_model() -> None:
        await asyncio.get_running_loop().run_in_executor(None, reload)

    @app.agent(faust_topic(app, EVENTS_INTERACTIONS), name=f"{NAME}-interactions")
    async def interactions(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(1000, within=0.02):
            with stop_on_failure(NAME):
                await processor.on_interactions(batch)

    @app.agent(faust_topic(app, FEATURES_CHANGED), name=f"{NAME}-features")
    async def features_changed(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(1000, within=0.02):
            with stop_on_failure(NAME):
                await processor.on_features_changed(batch)

    @app.agent(faust_topic(app, CACHE_INVALIDATIONS), name=f"{NAME}-refresh")
    async def refresh_commands(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(1000, within=0.05):
            with stop_on_failure(NAME):
                await processor.on_refresh_commands(batch)

    @app.agent(faust_topic(app, REGISTRY_CHANGES), name=f"{NAME}-registry")
    async def registry_changes(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(100, within=0.1):
            if await processor.on_registry_changes(batch):
                await asyncio.get_running_loop().run_in_executor(None, reload)

    @app.timer(interval=POINTER_CHECK_S)
    async def check_pointer() -> None:
        await asyncio.get_running_loop().run_in_executor(None, reload)

    @app.timer(interval=max(cfg.debounce_ms / 2000.0, 0.01))
    async def rebuild() -> None:
        users = processor.due()
        if users:  # one stat of the index pointer; a load only when a snapshot is new
            await asyncio.get_running_loop().run_in_executor(None, content.refresh)
        while users:
            started = time.perf_counter()
            summaries = await processor.rebuild(users)
            if summaries is None:
                return
            for s in summaries:
                await out.send(key=CANDIDATES.key_of(s), value=codecs.encode(CANDIDATES, s))
            latency.observe(time.perf_counter() - started)
            users = processor.due()

    return app
