"""serving.explanations against the real Redis: cached LLM text when present, templates
otherwise, one MGET per call, and templates (never an error, never a wait) when Redis hangs."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis

from streamrec.infra.settings import Settings
from streamrec.llm.keys import explanation_key
from streamrec.serving.explanations import ItemFacts, WatchedItem, explain_items, explain_items_sync
from streamrec.streams import codecs
from streamrec.topics import LLM_ENRICH_RESULTS, EnrichResult
from streamrec.topics.stores import LLM_RESULT

pytestmark = pytest.mark.integration

RECENT = [WatchedItem("w", "Heat (1995)", ("Crime",))]


def _cache(store: redis.Redis, user: str, item: str, text: str) -> None:
    result = EnrichResult(
        key=explanation_key(user, item), kind="explanation", item_id=item, user_id=user,
        text=text, model="m",
    )  # fmt: skip
    store.set(LLM_RESULT.key(key=result.key), codecs.encode(LLM_ENRICH_RESULTS, result))


def _mget_calls(store: redis.Redis) -> int:
    return int(store.info("commandstats").get("cmdstat_mget", {}).get("calls", 0))


async def test_cached_explanations_win_and_the_rest_get_templates(
    stack: Settings, unique: str
) -> None:
    store = redis.Redis.from_url(stack.redis_url)
    user = f"u-{unique}"
    _cache(store, user, "a", "Because you loved Heat, try this heist.")
    store.set(LLM_RESULT.key(key=explanation_key(user, "b")), b"not json")
    facts = {"b": ItemFacts(("Crime",)), "c": ItemFacts(("Comedy",), popular=True)}
    client = aioredis.from_url(stack.redis_url)
    try:
        before = _mget_calls(store)
        got = await explain_items(
            client, user, ["a", "b", "c", "a"], recent=RECENT, facts=facts, timeout_s=2.0
        )  # a generous deadline: this test is about what is read, the next about the bound
        assert _mget_calls(store) == before + 1  # one round trip for all items
    finally:
        await client.aclose()
    assert list(got) == ["a", "b", "c"]
    assert (got["a"].source, got["a"].text) == ("llm", "Because you loved Heat, try this heist.")
    assert (got["b"].source, got["b"].text) == ("template", "Because you watched Heat (1995)")
    assert (got["c"].source, got["c"].text) == ("template", "Popular in Comedy this week")
    sync = explain_items_sync(store, user, ["a", "c"], recent=RECENT, facts=facts)
    assert sync["a"].source == "llm" and sync["c"].text == got["c"].text


@pytest.fixture
def silent_redis() -> Iterator[int]:
    """A TCP server that accepts connections and never answers: a hung Redis."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


async def test_a_hung_redis_gives_templates_within_the_deadline(silent_redis: int) -> None:
    client = aioredis.from_url(f"redis://127.0.0.1:{silent_redis}/0")
    try:
        t0 = time.monotonic()
        got = await explain_items(client, "u", ["a", "b"], recent=RECENT, timeout_s=0.05)
        elapsed = time.monotonic() - t0
    finally:
        await client.aclose()
    assert {e.source for e in got.values()} == {"template"}
    assert elapsed < 2.0  # bounded by the 50 ms deadline, not by Redis (which never answers)
    sync_client = redis.Redis(port=silent_redis, socket_timeout=0.05, socket_connect_timeout=0.05)
    got = explain_items_sync(sync_client, "u", ["a"], recent=RECENT)
    assert got["a"].text == "Because you watched Heat (1995)"
