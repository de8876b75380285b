"""The batch path against the per-request path it replaced, on the same real stores.

Redis is seeded by the serving conftest (catalog, trending lists, candidates, Feast features)
and the real trained ranker is promoted. The same requests go through
`serving.reference_path.reference_answer` (one Redis trip, one model call, one re-rank per
request) and, all at once, through the batch handler (one trip, one model call, one re-rank
for the batch): their answers must agree member by member in items, order, scores (1e-5),
level, model version and explanations, and the bytes each channel writes must validate
against its contract.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from streamrec.infra.settings import Settings
from streamrec.scenarios.seed import MovieLens
from streamrec.serving.deadlines import Deadline
from streamrec.serving.reference_path import reference_answer
from streamrec.serving.schemas import Recommendations, RecQuery
from streamrec.serving.worker import ServingWorker
from streamrec.topics import RecResponse
from tests.integration.serving.conftest import USERS_WITH_FEATURES, USERS_WITHOUT_FEATURES

pytestmark = pytest.mark.integration


def _unhurried(settings: Settings, **serving: object) -> Settings:
    """Budgets no machine misses, no response cache, and a batch window that holds every
    request the test sends at once."""
    return settings.with_overrides(
        serving={
            "request_budget_ms": 10_000,
            "dependency_cap_ms": 5_000,
            "cache_ttl_s": 0.0,
            "batch_max_wait_ms": 200.0,
            **serving,
        }
    )


def _queries() -> list[RecQuery]:
    qs = [RecQuery(request_id=f"f{u}", user_id=u, k=10) for u in USERS_WITH_FEATURES[:12]]
    qs += [RecQuery(request_id=f"n{u}", user_id=u, k=20) for u in USERS_WITHOUT_FEATURES[:6]]
    qs.append(RecQuery(request_id="nobody", user_id="nobody-golden", k=15))  # POPULAR
    qs.append(  # a session: its recent items are excluded and move into the history
        RecQuery(request_id="s", user_id=USERS_WITH_FEATURES[0], k=5, recent_item_ids=("1", "50"))
    )
    return [q.model_copy(update={"budget_ms": 10_000}) for q in qs]


async def test_the_batch_path_answers_as_the_per_request_path(serving_stack: Settings) -> None:
    worker = ServingWorker(_unhurried(serving_stack), publish_impressions=False)
    core = await worker.start()
    try:
        assert await asyncio.to_thread(worker.follower.loaded.wait, 60), "catalog not loaded"
        assert worker.models.current is not None and core.popular_loaded
        qs = _queries()
        expected = [await reference_answer(core, q, Deadline(q.budget_ms)) for q in qs]
        got = await asyncio.gather(*(core._compute(q, Deadline(q.budget_ms)) for q in qs))
        assert core.requests.sizes[-1] == len(qs)  # all of them in one batch
        levels = {a.level for a in got}
        assert {"FULL", "STALE_FEATURES", "POPULAR"} <= levels
        for q, old, new in zip(qs, expected, got, strict=True):
            assert new.level == old.level, q.user_id
            assert new.model_version == old.model_version, q.user_id
            assert new.item_ids == [i.item_id for i in old.items], q.user_id
            np.testing.assert_allclose(new.scores, [i.score for i in old.items], atol=1e-5)
            assert new.explanations == [i.explanation for i in old.items], q.user_id
            assert len(new.item_ids) == q.k
            # the bytes each channel writes hold to its contract
            reply = RecResponse.model_validate_json(new.response_json())
            assert [i.item_id for i in reply.items] == new.item_ids
            assert reply.correlation_id == q.request_id and reply.level == new.level
            body = Recommendations.model_validate_json(new.http_json(worker.catalog.get))
            assert [i.item_id for i in body.items] == new.item_ids
            assert all(i.title for i in body.items)
    finally:
        await worker.stop()


@pytest.mark.parametrize("model_breaker", ["closed", "half_open"])
async def test_one_batch_gives_each_member_its_own_level(
    serving_stack: Settings, movielens: MovieLens, model_breaker: str
) -> None:
    # One batch over the real stores and the real model whose members hit every level at
    # once: a user with features, one without, one with no candidates, one whose budget was
    # spent before it was read, and (half-open) a model breaker whose one trial only the
    # first member needing the model gets. Each member's own read, deadline and model
    # outcome decide its level; the others are unaffected.
    settings = _unhurried(serving_stack, breaker_failures=1, breaker_reset_s=60.0)
    worker = ServingWorker(settings, publish_impressions=False)
    core = await worker.start()
    try:
        assert await asyncio.to_thread(worker.follower.loaded.wait, 60), "catalog not loaded"
        model = core.breakers["model"]
        if model_breaker == "half_open":
            model.failure()  # open...
            model.opened_at -= model.reset_s  # ...and due for its one trial
        # users the ranker ranks (enough history), not the retrieval score
        with_features = [
            u
            for u in USERS_WITH_FEATURES
            if len(movielens.history.get(u, [])) >= core.cfg.cold_start_interactions
        ][:2]
        assert len(with_features) == 2, "the seed has users the model ranks"
        members = [
            (with_features[0], None),
            (USERS_WITHOUT_FEATURES[0], None),
            ("nobody-levels", None),
            (with_features[1], None),
            (with_features[0], Deadline(150, start=time.monotonic() - 1.0)),  # spent
        ]
        qs = [
            RecQuery(request_id=f"r{n}", user_id=u, k=10, budget_ms=10_000)
            for n, (u, _) in enumerate(members)
        ]
        got = await asyncio.gather(
            *(
                core._compute(q, deadline or Deadline(q.budget_ms))
                for q, (_, deadline) in zip(qs, members, strict=True)
            )
        )
        assert core.requests.sizes[-1] == len(qs)  # one batch
        levels = [a.level for a in got]
        if model_breaker == "closed":
            assert levels == ["FULL", "STALE_FEATURES", "POPULAR", "FULL", "POPULAR"]
            assert got[1].model_version is not None and got[3].model_version is not None
        else:
            # the one trial went to the first member asking; the others needing the model
            # are refused on their own, as requests on their own were
            assert levels == ["FULL", "SIMPLE_RANKING", "POPULAR", "SIMPLE_RANKING", "POPULAR"]
            assert got[1].model_version is None and got[3].model_version is None
        assert got[0].model_version is not None
        assert [a.correlation_id for a in got] == [q.request_id for q in qs]
        assert all(len(a.item_ids) == 10 for a in got)
        assert model.state == 0  # the trial (or the plain call) succeeded
        # the spent member was not the stores' fault: no breaker counted it
        assert all(core.breakers[d].state == 0 for d in ("features", "candidates"))
    finally:
        await worker.stop()
