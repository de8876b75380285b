"""Redis adapters: a user's candidates, the trending list and the removed items.

Responsibilities: read the layouts declared in `topics.stores` (the contract with the
candidates and trending processors), check candidate lists, and translate redis errors into
`DependencyError` at this boundary; `RedisRequestReads` reads a request's features,
candidates and history in one round trip (ADR 0056). A stored `CandidateList` is read with
`topics.candidate_codec.read_ranked`: the ids, scores and model version, every length checked,
without building 500 models (ADR 0048). Deadlines are the caller's
(`serving.deadlines.within`); the socket timeout only bounds a dead connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from streamrec.infra.redis_clients import async_client
from streamrec.infra.settings import Settings
from streamrec.serving.errors import DependencyError
from streamrec.serving.ports import Candidates
from streamrec.topics import candidate_codec
from streamrec.topics.errors import SchemaError
from streamrec.topics.stores import POPULAR, REMOVED_ITEMS, USER_CANDIDATES, USER_HISTORY

if TYPE_CHECKING:
    from streamrec.serving.feature_store import FeastUserFeatures


def connect(settings: Settings, timeout_s: float) -> aioredis.Redis:
    """The request path's client: straight to `redis_url`, or through the Sentinels."""
    return async_client(
        settings,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        max_connections=256,
        health_check_interval=0,
    )


class RedisCandidates:
    """`cand:{user_id}` (a `CandidateList`) -> `Candidates` (None when the user has none)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    async def read(self, user_id: str) -> Candidates | None:
        try:
            raw = await self.client.get(USER_CANDIDATES.key(user_id=user_id))
        except (RedisError, OSError) as exc:
            raise DependencyError("candidates", f"redis: {exc}") from None
        # A malformed list is the writer's bug; for this request it means "no candidates".
        return _candidates(raw)


class RedisHistory:
    """`cand:hist:{user_id}` (newest first) -> the last n items, oldest first."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    async def recent(self, user_id: str, n: int) -> list[str]:
        try:
            raw = await self.client.lrange(USER_HISTORY.key(user_id=user_id), 0, n - 1)
        except (RedisError, OSError) as exc:
            raise DependencyError("history", f"redis: {exc}") from None
        return [item.decode() for item in reversed(raw)]


# The request's reads as one script: the commands the three adapters above send (HMGET in
# Feast's layout, GET of the candidate list, LRANGE of the history), only the parts asked for
# (ARGV[1], a "1"/"0" per part), each under pcall so a part that fails (a key of the wrong
# type) comes back as its own error and the others keep their answers.
_READS_LUA = """
local parts, out, k = ARGV[1], {false, false, false}, 1
if string.sub(parts, 1, 1) == '1' then
  out[1] = redis.pcall('HMGET', KEYS[k], unpack(ARGV, 3)); k = k + 1
end
if string.sub(parts, 2, 2) == '1' then
  out[2] = redis.pcall('GET', KEYS[k]); k = k + 1
end
if string.sub(parts, 3, 3) == '1' then
  out[3] = redis.pcall('LRANGE', KEYS[k], 0, tonumber(ARGV[2]) - 1)
end
return out
"""


# The same reads for a batch of users in one script: ARGV[3] users, each with the keys of the
# parts asked for (ARGV[1], as above) in KEYS, in order; the reply is three entries per user
# (false where a part was not asked for), each under pcall so one member's failing part
# (a key of the wrong type) is that member's alone.
_BATCH_READS_LUA = """
local parts, n, out, k = ARGV[1], tonumber(ARGV[3]), {}, 1
local f, c, h = string.sub(parts, 1, 1) == '1', string.sub(parts, 2, 2) == '1',
  string.sub(parts, 3, 3) == '1'
local hist_end = tonumber(ARGV[2]) - 1
for m = 0, n - 1 do
  local base = 3 * m
  out[base + 1], out[base + 2], out[base + 3] = false, false, false
  if f then out[base + 1] = redis.pcall('HMGET', KEYS[k], unpack(ARGV, 4)); k = k + 1 end
  if c then out[base + 2] = redis.pcall('GET', KEYS[k]); k = k + 1 end
  if h then out[base + 3] = redis.pcall('LRANGE', KEYS[k], 0, hist_end); k = k + 1 end
end
return out
"""


class RedisRequestReads:
    """`serving.ports.RequestReads` on Redis: a user's features, candidates and history in
    ONE round trip (EVALSHA of `_READS_LUA`) instead of three commands. Each command cost the
    event loop ~50-60 us of redis-py and asyncio work (a pooled connection, a write, a
    parse, a timeout) and the gather a task each; one script answers all three in one
    reply. Each part is decoded as its own adapter does and fails on its own
    (`DependencyError` named after it), so the core still settles each part's breaker by
    what happened to that part (ADR 0056)."""

    def __init__(
        self, client: aioredis.Redis, features: FeastUserFeatures, max_keys: int = 100_000
    ) -> None:
        self.features = features
        self.script = client.register_script(_READS_LUA)
        self.batch_script = client.register_script(_BATCH_READS_LUA)
        # user id -> Feast's entity key (a protobuf serialisation, ~5 us): asked again and
        # again for the same users; bounded, emptied when full.
        self.feature_keys: dict[str, bytes] = {}
        self.max_keys = max_keys

    async def read(self, user_id: str, parts: tuple[str, ...], history_n: int) -> dict[str, object]:
        out: dict[str, object] = {}
        keys: list[bytes | str] = []
        args: list[bytes | str | int] = ["", history_n]
        reader = None
        flags = ["0", "0", "0"]
        if "features" in parts:
            try:
                reader = await self.features.open_reader()
            except DependencyError as exc:  # not registered yet: the other parts still read
                out["features"] = exc
            else:
                flags[0] = "1"
                key = self.feature_keys.get(user_id)
                if key is None:
                    if len(self.feature_keys) >= self.max_keys:
                        self.feature_keys.clear()
                    key = self.feature_keys[user_id] = reader.key(user_id)
                keys.append(key)
                args.extend(reader.fields)
        if "candidates" in parts:
            flags[1] = "1"
            keys.append(USER_CANDIDATES.key(user_id=user_id))
        if "history" in parts:
            flags[2] = "1"
            keys.append(USER_HISTORY.key(user_id=user_id))
        if not keys:
            return out
        args[0] = "".join(flags)
        try:
            raw_features, raw_candidates, raw_history = await self.script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise DependencyError("redis", f"redis: {exc}") from None
        if reader is not None:
            out["features"] = _part(
                "features", raw_features, lambda raw: self.features.decode(reader, user_id, raw)
            )
        if "candidates" in parts:
            out["candidates"] = _part("candidates", raw_candidates, _candidates)
        if "history" in parts:
            out["history"] = _part(
                "history", raw_history, lambda raw: [i.decode() for i in reversed(raw)]
            )
        return out

    async def read_many(
        self, user_ids: list[str], parts: tuple[str, ...], history_n: int
    ) -> list[dict[str, object]]:
        """`read` for a whole batch of users in ONE round trip (EVALSHA of `_BATCH_READS_LUA`
        over every member's keys), the candidate lists decoded together
        (`candidate_codec.read_ranked_many`). One dict per user, as `read` gives; a part that
        fails for one member fails for that member alone. Raises `DependencyError` only when
        the round trip itself failed."""
        out: list[dict[str, object]] = [{} for _ in user_ids]
        reader = None
        flags = ["0", "0", "0"]
        if "features" in parts:
            try:
                reader = await self.features.open_reader()
            except DependencyError as exc:  # not registered yet: the other parts still read
                for row in out:
                    row["features"] = exc
            else:
                flags[0] = "1"
        flags[1] = "1" if "candidates" in parts else "0"
        flags[2] = "1" if "history" in parts else "0"
        if flags == ["0", "0", "0"] or not user_ids:
            return out
        keys: list[bytes | str] = []
        for user_id in user_ids:
            if reader is not None:
                keys.append(self._feature_key(reader, user_id))
            if flags[1] == "1":
                keys.append(USER_CANDIDATES.key(user_id=user_id))
            if flags[2] == "1":
                keys.append(USER_HISTORY.key(user_id=user_id))
        args: list[bytes | str | int] = ["".join(flags), history_n, len(user_ids)]
        if reader is not None:
            args.extend(reader.fields)
        try:
            reply = await self.batch_script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise DependencyError("redis", f"redis: {exc}") from None
        if flags[1] == "1":
            lists = [reply[3 * m + 1] for m in range(len(user_ids))]
            raws = [raw if isinstance(raw, bytes) else None for raw in lists]
            ranked = candidate_codec.read_ranked_many(raws)
        for m, user_id in enumerate(user_ids):
            row = out[m]
            if reader is not None:
                row["features"] = _part(
                    "features",
                    reply[3 * m],
                    lambda raw, u=user_id: self.features.decode(reader, u, raw),
                )
            if flags[1] == "1":
                raw = lists[m]
                if isinstance(raw, Exception):  # pcall's error, this member's alone
                    row["candidates"] = DependencyError("candidates", f"redis: {raw}")
                elif ranked.errors[m] is not None:  # the writer's bug: no candidates here
                    row["candidates"] = DependencyError("candidates", ranked.errors[m].reason)
                elif not ranked.found[m]:
                    row["candidates"] = None
                else:
                    ids, scores = ranked.member(m)
                    row["candidates"] = Candidates(ids, scores, ranked.model_versions[m])
            if flags[2] == "1":
                row["history"] = _part(
                    "history", reply[3 * m + 2], lambda raw: [i.decode() for i in reversed(raw)]
                )
        return out

    def _feature_key(self, reader: Any, user_id: str) -> bytes:
        key = self.feature_keys.get(user_id)
        if key is None:
            if len(self.feature_keys) >= self.max_keys:
                self.feature_keys.clear()
            key = self.feature_keys[user_id] = reader.key(user_id)
        return key


def _part(name: str, raw: object, decode: Callable[[Any], object]) -> object:
    """One part of the script's reply, decoded; its own error (named after it) if it failed."""
    if isinstance(raw, Exception):  # pcall's error, one part's alone
        return DependencyError(name, f"redis: {raw}")
    try:
        return decode(raw)
    except DependencyError as exc:
        return exc if exc.dependency == name else DependencyError(name, exc.reason)


def _candidates(raw: bytes | None) -> Candidates | None:
    if raw is None:
        return None
    try:
        ranked = candidate_codec.read_ranked(raw)
    except SchemaError as exc:
        raise DependencyError("candidates", exc.reason) from None
    return Candidates(ranked.item_ids, ranked.scores, ranked.model_version)


class RedisPopular:
    """`popular:{window}` zsets and the `catalog:removed` set."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    async def popular(self, window: str, n: int) -> list[tuple[str, float]]:
        try:
            rows = await self.client.zrevrange(
                POPULAR.key(window=window), 0, n - 1, withscores=True
            )
        except (RedisError, OSError) as exc:
            raise DependencyError("popular", f"redis: {exc}") from None
        return [(item.decode(), float(score)) for item, score in rows]

    async def removed(self) -> set[str]:
        try:
            members = await self.client.smembers(REMOVED_ITEMS.key())
        except (RedisError, OSError) as exc:
            raise DependencyError("popular", f"redis: {exc}") from None
        return {m.decode() for m in members}

    async def removed_among(self, item_ids: list[str]) -> set[str]:
        try:
            flags = await self.client.smismember(REMOVED_ITEMS.key(), item_ids)
        except (RedisError, OSError) as exc:
            raise DependencyError("popular", f"redis: {exc}") from None
        return {i for i, flag in zip(item_ids, flags, strict=True) if flag}
