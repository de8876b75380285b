"""The merged reads against the real Redis: one round trip (`RedisRequestReads`) gives what the
three separate adapters give, and a part that fails fails alone, named after its dependency;
the answer's explanations and removal check share one round trip too (`explain_and_check`)."""

from __future__ import annotations

from typing import ClassVar

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from streamrec.features.online import UserFeatures as OnlineUserFeatures
from streamrec.infra.settings import Settings
from streamrec.llm.keys import explanation_key
from streamrec.serving.errors import DependencyError
from streamrec.serving.explanations import (
    BATCH_LUA,
    CHECKED_LUA,
    ItemFacts,
    WatchedItem,
    explain_and_check,
    explain_batch,
    explain_items,
)
from streamrec.serving.feature_store import FeastUserFeatures
from streamrec.serving.ports import Candidates, FeatureRead
from streamrec.serving.redis_stores import RedisCandidates, RedisHistory, RedisRequestReads
from streamrec.topics import candidate_codec
from streamrec.topics.stores import (
    LLM_RESULT,
    USER_CANDIDATES,
    USER_HISTORY,
    Candidate,
    CandidateList,
)

pytestmark = pytest.mark.integration

PARTS = ("features", "candidates", "history")


class StubReader:
    """Feast's layout reduced to one hash with two fields (the real reader needs a registry;
    its own decoding is tested against Feast in tests/integration/features)."""

    fields: ClassVar[list[bytes]] = [b"items", b"n"]

    def key(self, user_id: str) -> bytes:
        return f"test:feat:{user_id}".encode()

    def decode(self, user_id: str, raw: list[bytes | None]) -> OnlineUserFeatures:
        if raw[1] is None:
            return OnlineUserFeatures(user_id=user_id, found=False)
        return OnlineUserFeatures(
            user_id=user_id,
            found=True,
            last_items=raw[0].decode().split(","),
            total_interactions=int(raw[1]),
            last_event_ms=1,
        )


class StubFeatures(FeastUserFeatures):
    def __init__(self, settings: Settings, client: aioredis.Redis, registered: bool = True):
        super().__init__(settings, client)
        self.registered = registered

    async def open_reader(self):  # type: ignore[override]
        if not self.registered:
            raise DependencyError("features", "feature service not registered yet")
        return StubReader()


def _seed(store: redis.Redis, user: str) -> None:
    stored = CandidateList(
        user_id=user,
        model_version="tt1",
        items=[Candidate(item_id=str(i), score=1.0 / i, sources=["t"]) for i in range(1, 31)],
    )
    store.set(USER_CANDIDATES.key(user_id=user), candidate_codec.encode(stored))
    store.lpush(USER_HISTORY.key(user_id=user), *[str(i) for i in range(100, 160)])  # newest first
    store.hset(StubReader().key(user), mapping={b"items": b"7,8,9", b"n": b"42"})


def _scripts_run(store: redis.Redis) -> int:
    stats = store.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))


async def test_one_round_trip_reads_what_the_three_adapters_read(
    stack: Settings, unique: str
) -> None:
    store = redis.Redis.from_url(stack.redis_url)
    user = f"u-{unique}"
    _seed(store, user)
    client = aioredis.from_url(stack.redis_url)
    try:
        reads = RedisRequestReads(client, StubFeatures(stack, client))
        await reads.read(user, PARTS, 50)  # loads the script once
        before = _scripts_run(store)
        got = await reads.read(user, PARTS, 50)
        assert _scripts_run(store) == before + 1
        candidates = await RedisCandidates(client).read(user)
        history = await RedisHistory(client).recent(user, 50)
        assert isinstance(got["candidates"], Candidates)
        assert got["candidates"] == candidates
        assert got["history"] == history and len(history) == 50
        features = got["features"]
        assert isinstance(features, FeatureRead)
        assert features.features.recent_items == ["7", "8", "9"]
        assert features.features.n_interactions == 42
        # only the parts asked for; nothing stored is None / [], not an error
        assert set(await reads.read(user, ("history",), 5)) == {"history"}
        empty = await reads.read(f"nobody-{unique}", PARTS, 50)
        assert empty == {"features": None, "candidates": None, "history": []}
    finally:
        await client.aclose()


async def test_a_part_that_fails_fails_alone(stack: Settings, unique: str) -> None:
    store = redis.Redis.from_url(stack.redis_url)
    user = f"u-{unique}"
    _seed(store, user)
    store.delete(USER_CANDIDATES.key(user_id=user))
    store.rpush(USER_CANDIDATES.key(user_id=user), b"x")  # the wrong type: GET fails
    client = aioredis.from_url(stack.redis_url)
    try:
        got = await RedisRequestReads(client, StubFeatures(stack, client)).read(user, PARTS, 50)
        assert isinstance(got["candidates"], DependencyError)
        assert got["candidates"].dependency == "candidates"
        assert isinstance(got["features"], FeatureRead) and len(got["history"]) == 50
        # a malformed candidate list is the candidates' failure too
        store.delete(USER_CANDIDATES.key(user_id=user))
        store.set(USER_CANDIDATES.key(user_id=user), b"not a candidate list")
        got = await RedisRequestReads(client, StubFeatures(stack, client)).read(user, PARTS, 50)
        assert isinstance(got["candidates"], DependencyError)
        assert got["candidates"].dependency == "candidates"
        # features not registered yet: the other parts are still read
        unregistered = StubFeatures(stack, client, registered=False)
        got = await RedisRequestReads(client, unregistered).read(user, PARTS, 50)
        assert isinstance(got["features"], DependencyError) and len(got["history"]) == 50
    finally:
        await client.aclose()


async def test_an_unreachable_redis_fails_the_round_trip(stack: Settings) -> None:
    client = aioredis.from_url("redis://127.0.0.1:1", socket_connect_timeout=0.5)
    try:
        with pytest.raises(DependencyError):
            await RedisRequestReads(client, StubFeatures(stack, client)).read("u", PARTS, 50)
    finally:
        await client.aclose()


async def test_explanations_and_the_removal_check_in_one_round_trip(
    stack: Settings, unique: str
) -> None:
    store = redis.Redis.from_url(stack.redis_url)
    user, removed = f"u-{unique}", f"test:removed:{unique}"
    store.sadd(removed, "b")
    store.set(LLM_RESULT.key(key=explanation_key(user, "a")), orjson.dumps({"text": "Heist!"}))
    client = aioredis.from_url(stack.redis_url)
    try:
        script = client.register_script(CHECKED_LUA)
        await explain_and_check(script, removed, user, ["a"], timeout_s=2.0)  # loads it
        before = _scripts_run(store)
        texts, gone = await explain_and_check(
            script, removed, user, ["a", "b", "c"], facts={"c": ItemFacts(("Comedy",))},
            timeout_s=2.0,
        )  # fmt: skip
        assert _scripts_run(store) == before + 1
        assert gone == {"b"}
        assert (texts["a"].source, texts["a"].text) == ("llm", "Heist!")
        assert texts["c"].text == "Recommended in Comedy"
        # the removal check failing alone (wrong type) still gives the explanations
        store.delete(removed)
        store.rpush(removed, "b")
        texts, gone = await explain_and_check(script, removed, user, ["a"], timeout_s=2.0)
        assert gone is None and texts["a"].source == "llm"
    finally:
        await client.aclose()


async def test_a_batch_of_explanations_reads_as_each_member_alone_in_one_trip(
    stack: Settings, unique: str
) -> None:
    # The batch script builds the keys from three arguments: its texts and removals must be
    # the ones each member reads on its own through MGET, for members sharing items, a
    # member with no items, and a batch past the script's unpack chunk (4,000 values).
    store = redis.Redis.from_url(stack.redis_url)
    removed = f"test:removed:{unique}"
    store.sadd(removed, "i2", "i4500")
    users = [f"u{n}-{unique}" for n in range(4)]
    store.set(LLM_RESULT.key(key=explanation_key(users[0], "i1")), orjson.dumps({"text": "A"}))
    store.set(LLM_RESULT.key(key=explanation_key(users[2], "i1")), orjson.dumps({"text": "C"}))
    store.set(LLM_RESULT.key(key=explanation_key(users[3], "i4999")), b"{not json")
    recent = [WatchedItem("w", "Heat (1995)", ("Crime",))]
    genres = {"i1": ("Crime",), "i3": ("Comedy",)}
    members = [
        (users[0], ["i1", "i2", "i3"], recent),
        (users[1], [], recent),
        (users[2], ["i3", "i1"], []),
        (users[3], [f"i{n}" for n in range(5000)], []),
    ]
    client = aioredis.from_url(stack.redis_url)
    try:
        script = client.register_script(BATCH_LUA)
        for check in (True, False):
            before = _scripts_run(store)
            texts, gone = await explain_batch(
                members,
                lambda i: genres.get(i, ()),
                {"i3"},
                script=script,
                removed_key=removed,
                check_removed=check,
                timeout_s=5.0,
            )
            assert _scripts_run(store) - before in (1, 2)  # the first call loads it
            assert gone == ({"i2", "i4500"} if check else None)
            popular = "Popular in Comedy this week"
            assert texts[0] == ["A", "Because you watched Heat (1995)", popular]
            assert texts[1] == [] and texts[2] == [popular, "C"]
            for (user, ids, seen), got in zip(members, texts, strict=True):
                alone = await explain_items(
                    client,
                    user,
                    ids,
                    recent=seen,
                    facts={i: ItemFacts(genres.get(i, ()), i == "i3") for i in ids},
                    timeout_s=5.0,
                )
                assert got == [alone[i].text for i in ids]
    finally:
        await client.aclose()


async def test_one_round_trip_reads_a_whole_batch_as_each_user_alone(
    stack: Settings, unique: str
) -> None:
    store = redis.Redis.from_url(stack.redis_url)
    users = [f"u{n}-{unique}" for n in range(4)]
    for user in users[:3]:
        _seed(store, user)
    # one member's candidates are the wrong type, another's are malformed: each fails alone
    store.delete(USER_CANDIDATES.key(user_id=users[1]))
    store.rpush(USER_CANDIDATES.key(user_id=users[1]), b"x")
    store.set(USER_CANDIDATES.key(user_id=users[2]), b"not a candidate list")
    client = aioredis.from_url(stack.redis_url)
    try:
        reads = RedisRequestReads(client, StubFeatures(stack, client))
        await reads.read_many(users, PARTS, 50)  # loads the script once
        before = _scripts_run(store)
        rows = await reads.read_many(users, PARTS, 50)
        assert _scripts_run(store) == before + 1
        assert len(rows) == 4
        alone = [await reads.read(user, PARTS, 50) for user in users]
        for row, one in zip(rows, alone, strict=True):
            assert row["features"] == one["features"] and row["history"] == one["history"]
        first = rows[0]["candidates"]
        assert isinstance(first, Candidates)
        expected = alone[0]["candidates"]
        assert first.item_ids == expected.item_ids and list(first.scores) == expected.scores
        assert first.model_version == expected.model_version
        for n in (1, 2):
            assert isinstance(rows[n]["candidates"], DependencyError)
            assert rows[n]["candidates"].dependency == "candidates"
        assert rows[3] == {"features": None, "candidates": None, "history": []}
        assert await reads.read_many(users, ("history",), 5) == [
            {"history": one["history"][-5:]} for one in alone
        ]
    finally:
        await client.aclose()
