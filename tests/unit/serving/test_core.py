"""The core's fallback chain, deadlines and coalescing, with in-memory doubles of the stores."""

import asyncio
import threading
import time
from datetime import UTC, datetime

import pytest

from streamrec.infra.settings import ServingSettings
from streamrec.models.features import UserFeatures
from streamrec.serving.core import Recommender
from streamrec.serving.deadlines import Deadline
from streamrec.serving.errors import DependencyError
from streamrec.serving.item_catalog import ItemCatalog
from streamrec.serving.memory import (
    MemoryCandidates,
    MemoryFeatures,
    MemoryHistory,
    MemoryPopular,
    MemoryReads,
    TableRanker,
)
from streamrec.serving.ports import FeatureRead
from streamrec.serving.schemas import RecQuery
from streamrec.topics import CatalogItem
from streamrec.topics.stores import Candidate, CandidateList

GENRES = ["Drama", "Comedy", "Action", "Thriller", "Romance"]


def catalog() -> ItemCatalog:
    c = ItemCatalog()
    for i in range(1, 101):
        c.apply(CatalogItem(item_id=str(i), title=f"Movie {i}", genres=[GENRES[i % 5]]))
    return c


def candidates(user: str, ids) -> CandidateList:
    return CandidateList(
        user_id=user,
        model_version="tt1",
        items=[
            Candidate(item_id=str(i), score=1.0 / (n + 1), sources=["t"]) for n, i in enumerate(ids)
        ],
    )


class Harness:
    def __init__(self, merged: bool = False, **cfg):
        self.features = MemoryFeatures(
            {
                "u1": FeatureRead(
                    UserFeatures(
                        user_id="u1", recent_items=["1", "2"], n_interactions=20, mean_rating=4.0
                    ),
                    datetime.now(UTC),
                )
            }
        )
        self.cands = MemoryCandidates({"u1": candidates("u1", range(1, 61))})
        self.popular = MemoryPopular({"24h": [(str(i), 100.0 - i) for i in range(50, 100)]})
        # The stand-in ranker prefers higher ids: distinguishable from retrieval order.
        self.ranker = TableRanker(lambda u, i: float(i))
        self.model_on = True
        self.history = MemoryHistory()
        self.ranked: list = []  # the RankInputs the model saw

        def rank(batch):
            self.ranked.extend(batch)
            if not self.model_on:
                from streamrec.serving.errors import ModelUnavailable

                raise ModelUnavailable()
            return [(s, self.ranker.version) for s in self.ranker.score(batch)]

        settings = ServingSettings(**{"cache_ttl_s": 0.0, "breaker_failures": 100, **cfg})
        self.lag = 0.0
        self.core = Recommender(
            settings,
            self.features,
            self.cands,
            self.popular,
            rank,
            catalog(),
            loop_lag=lambda: self.lag,
            history=self.history,
            # merged: the three reads in one round trip, as the worker reads Redis (ADR 0056)
            reads=MemoryReads(self.features, self.cands, self.history) if merged else None,
        )

    async def ask(self, user="u1", k=10, **kw):
        q = RecQuery(request_id=kw.pop("rid", "r1"), user_id=user, k=k, **kw)
        return await self.core.recommend(q)


@pytest.fixture(params=[False, True], ids=["separate", "merged"])
def merged(request) -> bool:
    """Each test runs with separate reads and with the merged read."""
    return request.param


@pytest.fixture
async def h(merged):
    harness = Harness(merged)
    await harness.core.start()
    yield harness
    await harness.core.stop()


async def test_full_answer_is_ranked_by_the_model_and_drops_seen_items(h):
    r = await h.ask()
    assert r.level == "FULL" and r.model_version == "t1"
    ids = [i.item_id for i in r.items]
    assert len(ids) == 10 and "1" not in ids and "2" not in ids
    assert ids[0] == "60"  # the model's favourite, not retrieval's first
    genres = [GENRES[int(i) % 5] for i in ids]
    assert max(genres.count(g) for g in GENRES) <= 4  # 40% genre cap


async def test_a_user_with_little_history_is_ranked_by_the_retrieval_score(h):
    h.features.rows["new"] = FeatureRead(
        UserFeatures(user_id="new", recent_items=["7"], n_interactions=1), datetime.now(UTC)
    )
    h.cands.rows["new"] = candidates("new", range(10, 70))  # retrieval order: 10, 11, ...
    batches = len(h.ranker.batches)
    r = await h.ask(user="new", k=5, rid="c1")
    assert r.level == "FULL" and r.model_version == "tt1"
    # The stand-in ranker prefers higher ids; the answer keeps the retrieval order (genre
    # diversity: two of each genre at most in five).
    assert [i.item_id for i in r.items] == ["10", "11", "12", "13", "14"]
    assert len(h.ranker.batches) == batches  # the ranker was not asked


async def test_the_ranker_sees_the_stored_history_with_newer_feast_items_after_it(h):
    # Feast keeps the last 10 items; the stored history (the ranker's training length) is
    # longer but its writer lags: Feast's newest item ("2") is kept at the end.
    h.history.rows["u1"] = [str(i) for i in range(30, 60)] + ["1"]
    await h.ask(rid="h1", recent_item_ids=("5",))
    seen = h.ranked[-1].user.recent_items
    assert seen == [str(i) for i in range(30, 60)] + ["1", "2", "5"]


async def test_a_failing_history_store_falls_back_to_feast_items(h):
    h.history.fail = True
    r = await h.ask(rid="h2")
    assert r.level == "FULL"
    assert h.ranked[-1].user.recent_items == ["1", "2"]


async def test_missing_features_degrade_to_stale(h):
    h.cands.rows["u2"] = candidates("u2", range(1, 61))
    r = await h.ask(user="u2")
    assert r.level == "STALE_FEATURES" and r.model_version == "t1"


async def test_old_features_are_stale_when_an_age_limit_is_set():
    h = Harness(features_stale_s=60.0)
    old = datetime(2020, 1, 1, tzinfo=UTC)
    h.features.rows["u1"] = FeatureRead(h.features.rows["u1"].features, old)
    await h.core.start()
    try:
        assert (await h.ask()).level == "STALE_FEATURES"
        h.features.rows["u1"] = FeatureRead(h.features.rows["u1"].features, datetime.now(UTC))
        assert (await h.ask()).level == "FULL"
    finally:
        await h.core.stop()


async def test_failed_feature_store_uses_last_seen_features(h):
    await h.ask()
    h.features.fail = True
    r = await h.ask()
    assert r.level == "STALE_FEATURES"
    assert {"1", "2"}.isdisjoint(i.item_id for i in r.items)  # remembered history still applies


async def test_model_unavailable_degrades_to_simple_ranking(h):
    h.model_on = False
    r = await h.ask()
    assert r.level == "SIMPLE_RANKING" and r.model_version is None
    assert r.items[0].item_id == "3"  # retrieval order (1 and 2 were seen)


async def test_slow_features_keep_the_deadline(h, merged):
    h.features.delay_s = 1.0
    r = await h.ask(budget_ms=100)
    # Separate reads: only the features are late. One round trip is late as a whole (every
    # part times out: no candidates, POPULAR), as three commands to one slow Redis were.
    assert r.level == ("POPULAR" if merged else "STALE_FEATURES") and r.latency_ms < 500


async def test_no_candidates_or_failed_store_gives_popular(h):
    r = await h.ask(user="nobody")
    assert r.level == "POPULAR" and r.items[0].item_id == "50"
    h.cands.fail = True
    r = await h.ask()
    assert r.level == "POPULAR" and len(r.items) == 10


async def test_cold_start_session_moves_popular_items_of_its_genres_up(h):
    # item 53 is Thriller (53 % 5 == 3): a session of thrillers favours them
    r = await h.ask(user="nobody", recent_item_ids=("3", "8", "13"))
    top = [i.item_id for i in r.items[:3]]
    assert all(GENRES[int(i) % 5] == "Thriller" for i in top)


async def test_popular_list_survives_the_store_going_down(h):
    h.popular.fail = True
    h.cands.fail = True
    with pytest.raises(DependencyError):
        await h.core.refresh_popular()
    r = await h.ask(user="nobody")
    assert r.level == "POPULAR" and r.items[0].item_id == "50"


async def test_breaker_opens_and_stops_calling_the_failing_store(merged):
    h = Harness(merged, breaker_failures=2, breaker_reset_s=60)
    await h.core.start()
    try:
        h.cands.fail = True
        for n in range(5):
            await h.ask(rid=f"r{n}")
        assert h.cands.calls == 2
        assert h.core.breakers["candidates"].state == 2
    finally:
        await h.core.stop()


@pytest.mark.parametrize(("lag_s", "opens"), [(0.0, True), (0.5, False)])
async def test_timeouts_count_against_a_dependency_only_while_the_loop_keeps_up(
    lag_s, opens, merged
):
    # The same slow store: with the worker's loop on time the store is to blame and the
    # breaker opens; with the loop far behind the timeouts are the worker's own overload.
    h = Harness(merged, breaker_failures=2, breaker_reset_s=60, request_budget_ms=100)
    h.core.loop_lag = lambda: lag_s
    await h.core.start()
    try:
        h.cands.delay_s = 1.0
        for n in range(4):
            # over the topic: an HTTP budget would already be spent by the lag's wait
            assert (await h.ask(rid=f"r{n}", channel="kafka")).level == "POPULAR"
        assert (h.core.breakers["candidates"].state == 2) is opens
        assert h.cands.calls == (2 if opens else 4)
    finally:
        await h.core.stop()


async def test_burst_for_one_user_costs_one_ranking_and_keeps_each_request_id():
    h = Harness(cache_ttl_s=2.0)
    await h.core.start()
    try:
        answers = await asyncio.gather(*(h.ask(rid=f"r{n}") for n in range(20)))
        assert sum(h.ranker.batches) == 1
        assert sorted(a.correlation_id for a in answers) == sorted(f"r{n}" for n in range(20))
        assert len({tuple(i.item_id for i in a.items) for a in answers}) == 1
    finally:
        await h.core.stop()


async def test_concurrent_users_are_micro_batched():
    h = Harness(batch_max_wait_ms=20.0)
    for n in range(16):
        h.cands.rows[f"v{n}"] = candidates(f"v{n}", range(1, 61))
    await h.core.start()
    try:
        await asyncio.gather(*(h.ask(user=f"v{n}", rid=f"r{n}") for n in range(16)))
        assert max(h.ranker.batches) > 1
    finally:
        await h.core.stop()


async def test_an_item_removed_after_caching_is_never_served():
    h = Harness(cache_ttl_s=60.0, refresh_s=3600.0)
    await h.core.start()
    try:
        first = await h.ask(rid="r1")
        top = first.items[0].item_id
        h.popular.removed_ids.add(top)  # the removal lands after the answer was cached
        again = await h.ask(rid="r2")
        assert top not in [i.item_id for i in again.items]
        assert [i.item_id for i in again.items] == [i.item_id for i in first.items[1:]]
    finally:
        await h.core.stop()


async def test_removed_check_falls_back_to_memory_when_redis_fails():
    h = Harness(cache_ttl_s=60.0, refresh_s=3600.0)
    await h.core.start()
    try:
        first = await h.ask(rid="r1")
        top = first.items[0].item_id
        h.core.removed.add(top)
        h.popular.fail = True
        again = await h.ask(rid="r2")
        assert top not in [i.item_id for i in again.items]
    finally:
        await h.core.stop()


async def test_the_merged_read_still_tells_which_dependency_failed():
    # One round trip, three parts: a part that fails alone opens its own breaker only, and
    # the parts that answered keep their levels' inputs.
    h = Harness(True, breaker_failures=2, breaker_reset_s=60)
    await h.core.start()
    try:
        h.cands.fail = True
        for n in range(3):
            r = await h.ask(rid=f"r{n}")
            assert r.level == "POPULAR"
        breakers = h.core.breakers
        assert breakers["candidates"].state == 2
        assert breakers["features"].state == 0 and breakers["history"].state == 0
        # the open breaker's part is no longer asked for; the others still are, in one trip
        trips, features_calls = h.core.reads.calls, h.features.calls
        await h.ask(rid="r9")
        assert h.core.reads.calls == trips + 1 and h.features.calls == features_calls + 1
        assert h.cands.calls == 2
    finally:
        await h.core.stop()


async def test_a_failed_round_trip_counts_against_every_part_and_answers_popular():
    h = Harness(True, breaker_failures=2, breaker_reset_s=60)
    await h.core.start()
    try:
        h.core.reads.fail = True  # Redis down: the whole trip fails
        for n in range(2):
            assert (await h.ask(rid=f"r{n}")).level == "POPULAR"
        assert all(h.core.breakers[d].state == 2 for d in ("features", "candidates", "history"))
        assert h.core.reads.calls == 2
        await h.ask(rid="r3")  # every part's breaker open: no round trip at all
        assert h.core.reads.calls == 2
    finally:
        await h.core.stop()


async def test_removals_the_explanations_trip_reported_are_dropped_without_another_check():
    h = Harness(cache_ttl_s=60.0, refresh_s=3600.0)
    said: list[str] = []

    async def explain(user_id, items, recent, left_s):
        said.append(items[0].item_id)
        return [i.model_copy(update={"explanation": "x"}) for i in items], {items[0].item_id}

    h.core.explain = explain
    await h.core.start()
    try:
        calls = h.popular.calls
        first = await h.ask(rid="r1")
        assert said[0] not in [i.item_id for i in first.items]  # dropped as it was made
        assert all(i.explanation == "x" for i in first.items)
        assert h.popular.calls == calls  # no separate SMISMEMBER for a fresh answer
        await h.ask(rid="r2")  # a cache hit is checked again, on its own
        assert h.popular.calls == calls + 1
    finally:
        await h.core.stop()


async def test_an_explainer_that_could_not_check_leaves_the_check_to_the_core():
    h = Harness(refresh_s=3600.0)

    async def explain(user_id, items, recent, left_s):
        return items, None

    h.core.explain = explain
    await h.core.start()
    try:
        calls = h.popular.calls
        top = (await h.ask(rid="r1")).items[0].item_id
        assert h.popular.calls == calls + 1
        h.popular.removed_ids.add(top)
        assert top not in [i.item_id for i in (await h.ask(rid="r2")).items]
    finally:
        await h.core.stop()


@pytest.mark.parametrize("model_breaker", ["closed", "half_open"])
async def test_one_batch_gives_each_member_its_own_level(merged, model_breaker):
    # One batch whose members hit every level at once: each member's read, deadline and
    # model outcome decide its level, and the others are unaffected.
    h = Harness(merged, breaker_failures=1, breaker_reset_s=60, batch_max_wait_ms=50.0)
    h.cands.rows["nofeat"] = candidates("nofeat", range(1, 61))  # candidates, no features
    h.features.rows["new"] = FeatureRead(
        UserFeatures(user_id="new", recent_items=["7"], n_interactions=1), datetime.now(UTC)
    )
    h.cands.rows["new"] = candidates("new", range(10, 70))
    await h.core.start()
    try:
        model = h.core.breakers["model"]
        if model_breaker == "half_open":
            model.failure()  # open...
            model.opened_at -= model.reset_s  # ...and due for its one trial
        now = time.monotonic()

        def member(user: str, rid: str, deadline: Deadline | None = None):
            q = RecQuery(request_id=rid, user_id=user, k=5)
            return h.core._compute(q, deadline or Deadline(q.budget_ms, start=now))

        spent = Deadline(150, start=now - 1.0)  # its budget ran out before it was read
        answers = await asyncio.gather(
            member("nofeat", "a"),
            member("u1", "b"),
            member("new", "c"),
            member("nobody", "d"),
            member("u1", "e", spent),
        )
        assert h.core.requests.sizes[-1] == 5  # one batch
        levels = [a.level for a in answers]
        if model_breaker == "closed":
            assert levels == ["STALE_FEATURES", "FULL", "FULL", "POPULAR", "POPULAR"]
            assert h.ranker.batches[-1] == 2  # one model call for both members needing it
            assert answers[1].model_version == "t1" and answers[1].item_ids[0] == "60"
        else:
            # the half-open breaker's one trial went to the first member asking for it; the
            # other is refused on its own, as a request on its own was
            assert levels == ["STALE_FEATURES", "SIMPLE_RANKING", "FULL", "POPULAR", "POPULAR"]
            assert [i.user.user_id for i in h.ranked] == ["nofeat"]
            assert answers[1].model_version is None and answers[1].item_ids[0] == "3"
            assert model.state == 0  # the trial succeeded
        assert answers[0].model_version == "t1"
        assert answers[2].model_version == "tt1"  # retrieval order, not the model's
        assert answers[2].item_ids == ["10", "11", "12", "13", "14"]
        assert [a.correlation_id for a in answers] == ["a", "b", "c", "d", "e"]
        assert all(len(a.item_ids) == 5 for a in answers)
        # the spent member was not the stores' fault: no breaker counted it
        assert all(h.core.breakers[d].state == 0 for d in ("features", "candidates", "history"))
    finally:
        await h.core.stop()


async def test_a_member_past_its_deadline_at_the_model_falls_back_alone():
    h = Harness(True, batch_max_wait_ms=50.0)
    h.cands.rows["u2"] = candidates("u2", range(1, 61))
    model_calls: list[int] = []
    rank = h.core.batcher.run_batch

    def slow_rank(batch):
        # A model call that outlasts one member's deadline (150 ms), not the other's (5 s).
        model_calls.append(len(batch))
        threading.Event().wait(0.4)
        return rank(batch)

    h.core.batcher.run_batch = slow_rank
    await h.core.start()
    try:
        now = time.monotonic()
        short = RecQuery(request_id="s", user_id="u1", k=5, budget_ms=150)
        long = RecQuery(request_id="l", user_id="u2", k=5, budget_ms=5000)
        a, b = await asyncio.gather(
            h.core._compute(short, Deadline(short.budget_ms, start=now)),
            h.core._compute(long, Deadline(long.budget_ms, start=now)),
        )
        assert model_calls == [2]  # one model call for both
        assert a.level == "SIMPLE_RANKING" and a.model_version is None
        assert a.latency_ms < 400  # it did not wait for the model past its own deadline
        assert b.level == "STALE_FEATURES" and b.model_version == "t1"
    finally:
        await h.core.stop()


async def test_an_http_budget_counts_the_time_spent_waiting_for_the_event_loop(h):
    # The loop is 200 ms behind: an HTTP request that reaches the handler now has waited
    # about that long already, so its 150 ms budget is spent and it is answered from memory
    # at once; the same request over the topic (its age counted from sent_at) is not.
    h.lag = 0.2
    late = await h.ask(budget_ms=150, channel="http", rid="h")
    assert late.level == "POPULAR"
    topic = await h.ask(budget_ms=150, channel="kafka", rid="k")
    assert topic.level != "POPULAR"
    h.lag = 0.0
    assert (await h.ask(budget_ms=150, channel="http", rid="h2")).level != "POPULAR"
