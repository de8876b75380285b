"""Explanations for served items: the cached LLM one when it exists, a template otherwise.

Responsibilities:
- read every item's cached explanation (`llm:explanation:{user}:{item}`, written by the LLM
  enricher) in ONE Redis MGET, under a deadline (`timeout_s`, async) or the client's socket
  timeout (sync); a slow or failed read means templates for all, never an error;
- build a template explanation from what serving already knows (the user's recent items
  with titles and genres, the item's genres, whether it is trending): "Because you watched
  X", "Popular in Comedy this week";
- count hits and misses (streams.metrics, cache "llm_explanation").

It never calls the LLM and never waits for the enricher: LLM work is off the request path
(ADR 0062). Call it with the final top-k only (one key per item).

    explanations = await explain_items(redis, user_id, item_ids, recent=..., facts=...)
    explanations[item_id].text   # .source is "llm" or "template"
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import orjson
import redis
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from streamrec.llm.keys import explanation_key
from streamrec.streams import metrics
from streamrec.topics.stores import LLM_RESULT

Source = Literal["llm", "template"]
_DEFAULT_TIMEOUT_S = 0.02


@dataclass(frozen=True, slots=True)
class WatchedItem:
    """An item the user watched recently (most recent first in `recent`)."""

    item_id: str
    title: str
    genres: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ItemFacts:
    """What serving knows about a recommended item."""

    genres: tuple[str, ...] = ()
    popular: bool = False


@dataclass(frozen=True, slots=True)
class Explanation:
    item_id: str
    text: str
    source: Source


_NO_FACTS = ItemFacts()


def template_for(item_id: str, recent: Sequence[WatchedItem], facts: ItemFacts) -> str:
    """The best template explanation from the features (no I/O)."""
    genres = [g for g in facts.genres if g and g.lower() != "unknown"]
    if genres:
        wanted = set(genres)
        for watched in recent:  # most recent first: the freshest reason wins
            if watched.item_id != item_id and wanted.intersection(watched.genres):
                return f"Because you watched {watched.title}"
    if facts.popular:
        return f"Popular in {genres[0]} this week" if genres else "Popular this week"
    if recent and recent[0].item_id != item_id:
        return f"Because you watched {recent[0].title}"
    if genres:
        return f"Recommended in {genres[0]}"
    return "Recommended for you"


def _cached_text(raw: bytes | None) -> str | None:
    if not raw:
        return None
    try:
        text = orjson.loads(raw).get("text")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return text if isinstance(text, str) and text.strip() else None


def _assemble(
    item_ids: Sequence[str],
    raws: Sequence[bytes | None],
    recent: Sequence[WatchedItem],
    facts: Mapping[str, ItemFacts],
) -> dict[str, Explanation]:
    out: dict[str, Explanation] = {}
    hits = 0
    for item_id, raw in zip(item_ids, raws, strict=True):
        text = _cached_text(raw)
        if text is not None:
            hits += 1
            out[item_id] = Explanation(item_id, text, "llm")
        else:
            template = template_for(item_id, recent, facts.get(item_id, _NO_FACTS))
            out[item_id] = Explanation(item_id, template, "template")
    cache = metrics.CACHE_REQUESTS
    if hits:
        cache.labels("llm_explanation", "hit").inc(hits)
    if len(item_ids) - hits:
        cache.labels("llm_explanation", "miss").inc(len(item_ids) - hits)
    return out


def _keys(user_id: str, item_ids: Sequence[str]) -> list[str]:
    return [LLM_RESULT.key(key=explanation_key(user_id, i)) for i in item_ids]


async def explain_items(
    store: aioredis.Redis,
    user_id: str,
    item_ids: Sequence[str],
    *,
    recent: Sequence[WatchedItem] = (),
    facts: Mapping[str, ItemFacts] | None = None,
    timeout_s: float = _DEFAULT_TIMEOUT_S,
) -> dict[str, Explanation]:
    """One explanation per item id (asyncio serving path): one MGET within `timeout_s`."""
    item_ids = list(dict.fromkeys(item_ids))
    if not item_ids:
        return {}
    try:
        async with asyncio.timeout(timeout_s):  # no task per call, unlike wait_for (ADR 0055)
            raws = await store.mget(_keys(user_id, item_ids))
    except (TimeoutError, RedisError, OSError):
        raws = [None] * len(item_ids)  # the cache is decoration: templates for all
    return _assemble(item_ids, raws, recent, facts or {})


# The answer's reads as one script: which of the items are removed (SMISMEMBER of the removed
# set, ARGV) and their cached explanations (MGET, KEYS[2..]), each under pcall.
CHECKED_LUA = """
return {redis.pcall('SMISMEMBER', KEYS[1], unpack(ARGV)), redis.pcall('MGET', unpack(KEYS, 2))}
"""


async def explain_and_check(
    script: AsyncScript,
    removed_key: str,
    user_id: str,
    item_ids: Sequence[str],
    *,
    recent: Sequence[WatchedItem] = (),
    facts: Mapping[str, ItemFacts] | None = None,
    timeout_s: float = _DEFAULT_TIMEOUT_S,
) -> tuple[dict[str, Explanation], set[str] | None]:
    """`explain_items`, and which of `item_ids` are members of the set `removed_key` now, in
    ONE round trip (`script`: `CHECKED_LUA` registered on the client; ADR 0056). The
    removals are None when the trip failed or was late: the caller checks them its own way."""
    item_ids = list(dict.fromkeys(item_ids))
    if not item_ids:
        return {}, set()
    gone: set[str] | None = None
    try:
        async with asyncio.timeout(timeout_s):
            flags, raws = await script(keys=[removed_key, *_keys(user_id, item_ids)], args=item_ids)
    except (TimeoutError, RedisError, OSError):
        raws = [None] * len(item_ids)  # the cache is decoration: templates for all
    else:
        if isinstance(flags, list):
            gone = {i for i, flag in zip(item_ids, flags, strict=True) if flag}
        if not isinstance(raws, list):  # the MGET part failed alone
            raws = [None] * len(item_ids)
    return _assemble(item_ids, raws, recent, facts or {}), gone


# One member of a batch: (user id, its final item ids, its recent items, the items' facts).
BatchRequest = tuple[str, Sequence[str], Sequence[WatchedItem], Mapping[str, ItemFacts]]


async def explain_batch(
    requests: Sequence[BatchRequest],
    *,
    store: aioredis.Redis | None = None,
    script: AsyncScript | None = None,
    removed_key: str = "",
    timeout_s: float = _DEFAULT_TIMEOUT_S,
) -> tuple[list[dict[str, Explanation]], set[str] | None]:
    """`explain_items` (through `store`) or `explain_and_check` (through `script`, with the
    removed set `removed_key`) for a whole batch in ONE round trip: every member's keys in
    one MGET, and with `script` one SMISMEMBER of all their items. Per member its
    explanations; which items are removed now (None: not checked, or the trip failed)."""
    members = [list(dict.fromkeys(ids)) for _, ids, _, _ in requests]
    keys = [
        k for (user, _, _, _), ids in zip(requests, members, strict=True) for k in _keys(user, ids)
    ]
    if not keys:
        return [{} for _ in requests], set()
    union = list(dict.fromkeys(i for ids in members for i in ids))
    gone: set[str] | None = None
    raws: list[bytes | None] = [None] * len(keys)
    try:
        async with asyncio.timeout(timeout_s):
            if script is not None:
                flags, got = await script(keys=[removed_key, *keys], args=union)
            else:
                assert store is not None
                flags, got = None, await store.mget(keys)
    except (TimeoutError, RedisError, OSError):
        pass  # the cache is decoration: templates for all
    else:
        if isinstance(flags, list):
            gone = {i for i, flag in zip(union, flags, strict=True) if flag}
        if isinstance(got, list):  # else the MGET part failed alone
            raws = got
    out: list[dict[str, Explanation]] = []
    at = 0
    for (_, _, recent, facts), ids in zip(requests, members, strict=True):
        out.append(_assemble(ids, raws[at : at + len(ids)], recent, facts))
        at += len(ids)
    return out, gone


def explain_items_sync(
    store: redis.Redis,
    user_id: str,
    item_ids: Sequence[str],
    *,
    recent: Sequence[WatchedItem] = (),
    facts: Mapping[str, ItemFacts] | None = None,
) -> dict[str, Explanation]:
    """The same for synchronous callers; bounded by `store`'s socket timeout."""
    item_ids = list(dict.fromkeys(item_ids))
    if not item_ids:
        return {}
    try:
        raws = store.mget(_keys(user_id, item_ids))
    except (RedisError, OSError):
        raws = [None] * len(item_ids)
    return _assemble(item_ids, raws, recent, facts or {})
