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
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import orjson
import redis
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from streamrec.llm.keys import EXPLANATION_PREFIX, explanation_key
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


def explainable_genres(genres: Sequence[str]) -> tuple[str, ...]:
    """The genres a template may name: not empty, not "unknown"."""
    return tuple(g for g in genres if g and g.lower() != "unknown")


def template_for(item_id: str, recent: Sequence[WatchedItem], facts: ItemFacts) -> str:
    """The best template explanation from the features (no I/O)."""
    popular = {item_id} if facts.popular else set()
    genres = explainable_genres(facts.genres)
    return templates_for([item_id], recent, lambda _: genres, popular)[0]


def templates_for(
    item_ids: Sequence[str],
    recent: Sequence[WatchedItem],
    genres_of: Callable[[str], tuple[str, ...]],
    trending: Container[str],
) -> list[str]:
    """`template_for` over one member's items (`genres_of`: an item's `explainable_genres`;
    `trending`: the items popular this week), each watched item's genres and reason built
    once for all of them instead of once per item."""
    watched = [(w.item_id, frozenset(w.genres), f"Because you watched {w.title}") for w in recent]
    latest = watched[0] if watched else None
    out: list[str] = []
    for item_id in item_ids:
        genres = genres_of(item_id)
        text = None
        if genres:
            for watched_id, watched_genres, because in watched:  # most recent first
                if watched_id != item_id and not watched_genres.isdisjoint(genres):
                    text = because
                    break
        if text is None:
            if item_id in trending:
                text = f"Popular in {genres[0]} this week" if genres else "Popular this week"
            elif latest is not None and latest[0] != item_id:
                text = latest[2]
            elif genres:
                text = f"Recommended in {genres[0]}"
            else:
                text = "Recommended for you"
        out.append(text)
    return out


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


# A batch's reads as one script whose arguments are three strings, however large the batch:
# redis-py packs every argument in Python (~0.5 us each), so a batch of 16 answers of 20
# items passed as keys and members cost ~640 packed arguments a batch. ARGV[1]: the key
# prefix of this batch's explanations; ARGV[2]: "1" to check removals; ARGV[3]: one line a
# member, "user<TAB>item<TAB>item...", lines joined by newlines. User and item ids hold no
# tabs or newlines (`topics.base.USER_ID_PATTERN`; the caller checks the counts it gets
# back). KEYS[1]: the removed-items set. The explanation keys are built here, so the script
# suits a single Redis (or a primary with replicas), not Redis Cluster. Returns {the removal
# flags of the distinct items in first-seen order, or false; the values in member order},
# each part under pcall; unpack is chunked, Lua's stack holds ~8k values.
BATCH_LUA = """
local prefix, check = ARGV[1], ARGV[2] == '1'
local keys, union, seen = {}, {}, {}
for line in string.gmatch(ARGV[3], '[^\\n]+') do
  local user = nil
  for field in string.gmatch(line, '[^\\t]+') do
    if user == nil then
      user = field
    else
      keys[#keys + 1] = prefix .. user .. ':' .. field
      if not seen[field] then
        seen[field] = true
        union[#union + 1] = field
      end
    end
  end
end
local function chunked(command, first, list)
  local out = {}
  for i = 1, #list, 4000 do
    local part
    if first then
      part = redis.pcall(command, first, unpack(list, i, math.min(i + 3999, #list)))
    else
      part = redis.pcall(command, unpack(list, i, math.min(i + 3999, #list)))
    end
    if type(part) ~= 'table' or part.err then return part end
    for _, v in ipairs(part) do out[#out + 1] = v end
  end
  return out
end
local flags = false
if check and #union > 0 then flags = chunked('SMISMEMBER', KEYS[1], union) end
local values = {}
if #keys > 0 then values = chunked('MGET', nil, keys) end
return {flags, values}
"""

# One member of a batch: (user id, its final item ids, its recent items).
BatchRequest = tuple[str, Sequence[str], Sequence[WatchedItem]]


async def explain_batch(
    requests: Sequence[BatchRequest],
    genres_of: Callable[[str], tuple[str, ...]],
    trending: Container[str],
    *,
    script: AsyncScript,
    removed_key: str,
    check_removed: bool,
    timeout_s: float = _DEFAULT_TIMEOUT_S,
) -> tuple[list[list[str]], set[str] | None]:
    """`explain_items`, and with `check_removed` `explain_and_check`, for a whole batch in
    ONE round trip (`script`: `BATCH_LUA` registered on the client): every member's cached
    explanations, and which of all their items are members of the set `removed_key` now.
    Per member the text of each of its item ids, in order (`genres_of` and `trending` as in
    `templates_for`); which items are removed now (None: not checked, or the trip failed)."""
    n_keys = sum(len(ids) for _, ids, _ in requests)
    if not n_keys:
        return [[] for _ in requests], set()
    union = list(dict.fromkeys(i for _, ids, _ in requests for i in ids))
    members = "\n".join("\t".join((user, *ids)) for user, ids, _ in requests)
    args = [LLM_RESULT.key(key=EXPLANATION_PREFIX), "1" if check_removed else "0", members]
    gone: set[str] | None = None
    raws: list[bytes | None] = [None] * n_keys
    try:
        async with asyncio.timeout(timeout_s):
            flags, got = await script(keys=[removed_key], args=args)
    except (TimeoutError, RedisError, OSError):
        pass  # the cache is decoration: templates for all
    else:
        if isinstance(flags, list) and len(flags) == len(union):
            gone = {i for i, flag in zip(union, flags, strict=True) if flag}
        if isinstance(got, list) and len(got) == n_keys:  # else the MGET part failed alone
            raws = got
    out: list[list[str]] = []
    at = hits = 0
    for _, ids, recent in requests:
        cached = [_cached_text(raw) if raw else None for raw in raws[at : at + len(ids)]]
        at += len(ids)
        missed = [i for i, text in zip(ids, cached, strict=True) if text is None]
        hits += len(ids) - len(missed)
        if missed:
            made = iter(templates_for(missed, recent, genres_of, trending))
            cached = [text if text is not None else next(made) for text in cached]
        out.append(cached)  # type: ignore[arg-type]
    cache = metrics.CACHE_REQUESTS
    if hits:
        cache.labels("llm_explanation", "hit").inc(hits)
    if n_keys - hits:
        cache.labels("llm_explanation", "miss").inc(n_keys - hits)
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
