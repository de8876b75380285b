"""`streamrec backfill candidates`: rebuild every known user's list, rate-limited.

Known users are those the candidates processor has seen (`cand:users`); each is rebuilt
with the promoted retriever through the same builder the processor uses. An
`aiolimiter.AsyncLimiter` at `candidates.backfill_rate` users per second paces the work in
small batches, so a backfill cannot starve live traffic of Redis or CPU. Each rewritten
list is also announced on the candidates topic, like the processor does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiolimiter import AsyncLimiter

from streamrec.candidates.builder import CandidateBuilder
from streamrec.candidates.content import ContentSource
from streamrec.candidates.loader import RetrieverHolder
from streamrec.candidates.state import CandidateState
from streamrec.infra.redis_clients import async_client
from streamrec.infra.settings import Settings
from streamrec.streams.producer import bulk_producer, flush, produce_event
from streamrec.topics import CANDIDATES

BATCH = 20


@dataclass
class BackfillReport:
    users: int
    seconds: float
    rate: float
    model_version: str


async def backfill(settings: Settings, rate: float | None = None) -> BackfillReport:
    cfg = settings.candidates
    rate = rate or cfg.backfill_rate
    store = async_client(settings)
    state = CandidateState(store, cfg.history_len, cfg.covisit_window)
    holder = RetrieverHolder(settings)
    holder.refresh()
    content = ContentSource(settings)
    content.refresh()
    builder = CandidateBuilder(
        cfg, store, state, holder.model, settings.models.session_len, content
    )
    producer = bulk_producer(settings)
    # Capacity of one batch, refilled at `rate` users per second.
    limiter = AsyncLimiter(max(BATCH, 1), time_period=BATCH / rate)
    started = time.perf_counter()
    done = 0
    try:
        users = await state.known_users()
        for start in range(0, len(users), BATCH):
            chunk = users[start : start + BATCH]
            await limiter.acquire(len(chunk))
            for summary in await builder.write(await builder.build(chunk)):
                produce_event(producer, CANDIDATES, summary)
            producer.poll(0)
            done += len(chunk)
        flush(producer)
    finally:
        await store.aclose()
    return BackfillReport(done, time.perf_counter() - started, rate, builder.model_version)
