"""The per-request answer path as it was before batch-first serving, kept as a reference.

REFERENCE ONLY: nothing in serving calls this. It exists for
`tests/integration/serving/test_batch_golden.py`, which feeds this path and the batch path
(`serving.core.Recommender._handle_batch`) the same stores and requests and compares their
answers (items, order, scores, level). Remove it together with that test once the batch
path has no reference to be held against (ADR 0092).

`reference_answer` does what `Recommender._compute` did for one request: its own Redis round
trip (`RequestReads.read`), its own model call through the micro-batcher, `rerank_arrays`,
its own explanations and removal check, a `RecResponse` built per item. It uses the core's
breakers, stores, model and in-memory lists, so both paths see the same state.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from streamrec.models.features import UserFeatures
from streamrec.serving.core import Recommender
from streamrec.serving.deadlines import Deadline
from streamrec.serving.errors import DependencyError
from streamrec.serving.fallback import simple_scores, worst
from streamrec.serving.ports import Candidates, FeatureRead, RankInput
from streamrec.serving.rerank import rerank_arrays
from streamrec.serving.schemas import RecQuery
from streamrec.topics import RecommendedItem, RecResponse


async def reference_answer(core: Recommender, q: RecQuery, deadline: Deadline) -> RecResponse:
    """One request's answer along the per-request path (no cache, no admission)."""
    cfg = core.cfg
    timeout = deadline.for_dependency(
        cfg.dependency_share, cfg.dependency_cap_ms, cfg.rank_reserve_ms
    )
    if core.reads is not None:
        feats, cands, hist = await core._read_merged(q.user_id, timeout)
    else:
        feats, cands, hist = await core._read_separate(q.user_id, timeout)
    user, level = core._user_features(q, feats, hist)
    exclude = core.removed | core.catalog.removed | set(user.recent_items)
    model_version: str | None = None
    if not isinstance(cands, Candidates) or not cands.item_ids:
        level = "POPULAR"
        ranking = core._popular_ranking()
        ids, scores = ranking.item_ids, ranking.scores_for(user.recent_items)
    else:
        cand_list = cands.head(cfg.max_candidates)
        ids = cand_list.item_ids
        known = isinstance(feats, FeatureRead)
        scores, model_version = await _score(core, user, known, cand_list, deadline)
        if model_version is None:
            level = worst(level, "SIMPLE_RANKING")
    top = rerank_arrays(ids, scores, q.k, exclude, core.catalog.get, cfg.max_genre_share)
    if len(top) < q.k and level != "POPULAR":
        have = {i for i, _ in top} | exclude
        floor = min((s for _, s in top), default=0.0)
        extra = [i for i, _ in core._popular_list()]
        extra_scores = floor - 1.0 - np.arange(len(extra), dtype=np.float64)
        top += rerank_arrays(extra, extra_scores, q.k - len(top), have, core.catalog.get, 1.0)
    item = RecommendedItem.model_construct
    items = [item(item_id=i, score=float(s)) for i, s in top]
    gone: set[str] | None = None
    explain = core.explain
    if explain is not None and callable(explain):
        items, gone = await explain(q.user_id, items, user.recent_items, deadline.remaining_s())
    if gone is None:
        gone = await core._removed_among([i.item_id for i in items]) if items else set()
    return RecResponse(
        correlation_id=q.request_id,
        user_id=q.user_id,
        items=[i for i in items if i.item_id not in gone],
        level=level,
        model_version=model_version,
        latency_ms=deadline.elapsed_ms(),
        served_at=datetime.now(UTC),
    )


async def _score(
    core: Recommender, user: UserFeatures, known: bool, cands: Candidates, deadline: Deadline
) -> tuple[np.ndarray, str | None]:
    if known and user.n_interactions < core.cfg.cold_start_interactions:
        return np.asarray(cands.scores, dtype=np.float64), cands.model_version or "retrieval"
    timeout = deadline.remaining_s() - core.cfg.rank_reserve_ms / 1000.0
    result = await core._guarded(
        "model", lambda: core.batcher.submit(RankInput(user, list(cands.item_ids))), timeout
    )
    if isinstance(result, DependencyError):
        return simple_scores(cands, core.catalog.popularity), None
    scores, version = result
    return np.asarray(scores, dtype=np.float64), version
