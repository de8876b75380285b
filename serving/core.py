"""The one core both channels (HTTP and the request topic) answer through.

Per request, only the edges (docs/architecture.md, the request path; ADR 0092):
1. a cached or in-flight answer for the same user/k/session is reused (`CoalescingCache`
   with XFetch early refresh, `serving.xfetch`);
2. admission (`AdmissionController`): bounded in flight, bounded rooms per priority class;
3. the admitted request joins a batch (`serving.batcher.RequestBatcher`: up to
   `batch_max_requests`, at most `batch_max_wait_ms` after the first); its answer comes back
   as an `serving.answer.Answer`, written out by its channel with orjson.

Per batch, once (`_handle_batch`):
4. user features, candidates and histories of every member in ONE Redis round trip
   (`RequestReads.read_many`, ADR 0056) under the batch's tightest deadline share, each part
   under its breaker, settled by each member's own outcome (a breaker counts the
   dependency's own failures, not the worker's overload: `_dependency_at_fault`); the
   candidate lists decoded together into arrays (`topics.candidate_codec.read_ranked_many`);
5. ONE model call for every member that needs the ranker (the model's own thread,
   `MicroBatcher`), each member waiting no longer than its own deadline; members with fewer
   than `cold_start_interactions` keep their retrieval order (ADR 0046);
6. re-ranking of the whole batch over one score matrix (`rerank.rerank_many`: removed,
   seen, diversity), and the trending top-up;
7. exploration (`serving.exploration`, ADR 0126): for the users of `explore_variants`, the
   last `explore_slots` of the answer go to the live items this process has shown least,
   from a rotation held in memory (no I/O; skipped when it has nothing to give);
8. ONE round trip for every member's explanations and the removal check; the impressions
   leave in one produce call per loop turn (`serving.impressions`).

Every member degrades on its own: its read, its deadline and its model outcome decide its
level, and the rest of its batch is unaffected. Every dependency failure lands in the
fallback chain (`serving.fallback`); only admission refuses a valid request (`Overloaded`).
Background tasks keep the trending list, the removed items and the exploration rotation in
memory, so the POPULAR level and exploration need nothing on the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from asyncio import FIRST_COMPLETED
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, TypeVar

import numpy as np

from streamrec.infra.settings import ServingSettings
from streamrec.models.features import UserFeatures
from streamrec.serving.admission import AdmissionController
from streamrec.serving.answer import Answer
from streamrec.serving.batcher import MicroBatcher, RequestBatcher
from streamrec.serving.breakers import CircuitBreaker, State
from streamrec.serving.deadlines import Deadline, within
from streamrec.serving.errors import BreakerOpen, DependencyError, DependencyTimeout
from streamrec.serving.exploration import Explorer, least_shown_order
from streamrec.serving.fallback import PopularRanking, simple_scores, worst
from streamrec.serving.impressions import ImpressionPublisher
from streamrec.serving.item_catalog import ItemCatalog
from streamrec.serving.metrics import ServingMetrics
from streamrec.serving.ports import (
    Candidates,
    CandidateStore,
    FeatureRead,
    HistoryStore,
    PopularStore,
    RankInput,
    RequestReads,
    UserFeatureStore,
)
from streamrec.serving.rerank import rerank_arrays, rerank_many
from streamrec.serving.schemas import RecQuery
from streamrec.serving.xfetch import XFetchCache
from streamrec.streams import metrics as shared_metrics
from streamrec.topics import RecommendedItem
from streamrec.topics.recs_responses import Level

log = logging.getLogger(__name__)
T = TypeVar("T")

DEPENDENCIES = ("features", "history", "candidates", "model", "popular")
# (user id, the final items, the user's recent items, seconds left) -> (items with
# explanations, which of them are removed now, or None when it did not check)
Explainer = Callable[
    [str, list[RecommendedItem], list[str], float],
    Awaitable[tuple[list[RecommendedItem], set[str] | None]],
]


class BatchExplainer(Protocol):
    """An explainer that serves a whole batch in one round trip (`serving.worker.Explainer`)."""

    async def explain_many(
        self, requests: Sequence[tuple[str, list[str], list[str]]], lefts_s: Sequence[float]
    ) -> tuple[list[list[str | None]], set[str] | None]:
        """Per (user id, final item ids, recent items): the explanation of each item; and
        which of all the items are removed now (None: not checked)."""
        ...


RankFn = Callable[[list[RankInput]], list[tuple[np.ndarray, str]]]
# What the request reads before ranking: features, candidates (or why not), the history.
UserReads = tuple[
    FeatureRead | DependencyError | None, Candidates | DependencyError | None, list[str]
]


def _failed_read(*reads: object) -> DependencyError | None:
    """The first read that failed (not one that found nothing): `serving.fallback` false."""
    return next((r for r in reads if isinstance(r, DependencyError)), None)


def _cacheable(answer: Answer) -> bool:
    # Only full answers are kept: a degraded one must not outlive the dependency's recovery.
    return answer.level == "FULL"


@dataclass(slots=True)
class Member:
    """One admitted request in a batch."""

    q: RecQuery
    deadline: Deadline


@dataclass(slots=True)
class _Plan:
    """A member's way through the batch: what it ranks, with what, and at which level."""

    index: int  # its place in the batch
    member: Member
    user: UserFeatures
    level: Level
    exclude: set[str]
    ids: Sequence[str] = ()
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    cands: Candidates | None = None
    needs_model: bool = False
    model_version: str | None = None
    error: BaseException | None = None  # a bug while ranking this member: its answer fails
    top: list[tuple[str, float]] = field(default_factory=list)
    explanations: list[str | None] = field(default_factory=list)
    explored: list[str] = field(default_factory=list)  # exploration's items in `top`


class Recommender:
    def __init__(
        self,
        cfg: ServingSettings,
        features: UserFeatureStore,
        candidates: CandidateStore,
        popular: PopularStore,
        rank: RankFn,
        catalog: ItemCatalog,
        metrics: ServingMetrics | None = None,
        impressions: ImpressionPublisher | None = None,
        explain: Explainer | None = None,
        loop_lag: Callable[[], float] = lambda: 0.0,
        history: HistoryStore | None = None,
        reads: RequestReads | None = None,
        explorer: Explorer | None = None,
    ) -> None:
        self.cfg = cfg
        self.explorer = explorer  # None: no exploration (explore_slots 0)
        self.reads = reads  # the three reads in one round trip (ADR 0056); None: one each
        self.loop_lag = loop_lag
        self.history = history
        self.features = features
        self.candidates = candidates
        self.popular_store = popular
        self.catalog = catalog
        self.metrics = metrics or ServingMetrics()
        self.impressions = impressions
        self.explain: Explainer | BatchExplainer | None = explain
        m = self.metrics
        self.breakers = {
            name: CircuitBreaker(name, cfg.breaker_failures, cfg.breaker_reset_s, self._breaker)
            for name in DEPENDENCIES
        }
        for name in DEPENDENCIES:
            m.breaker_state.labels(name).set(0)
        self.admission = AdmissionController(
            # admission off (comparison runs only): a bound no load reaches, so none is shed
            cfg.max_in_flight if cfg.admission else 1 << 30,
            {
                "interactive": cfg.queue_interactive,
                "prefetch": cfg.queue_prefetch,
                "background": cfg.queue_background,
            },
            cfg.retry_after_s,
            on_shed=lambda p, reason: m.shed.labels(p, reason).inc(),
        )
        # XFetch: a hot user's answer is recomputed once, early, in the background.
        self.cache: XFetchCache[Answer] = XFetchCache(cfg.cache_ttl_s, cfg.cache_max_entries)
        # The admitted requests' batches: the wait for company happens here, once.
        self.requests: RequestBatcher[Member, Answer] = RequestBatcher(
            self._handle_batch,
            cfg.batch_max_requests,
            cfg.batch_max_wait_ms / 1000.0,
            max_running=cfg.batch_running,
            wait_when_idle=cfg.batch_wait_when_idle,
        )
        # The model's thread. It waits for nothing (a request batch brings its inputs
        # together), and takes whatever is queued: batches that arrive while the model is
        # busy share its next call.
        self.batcher: MicroBatcher[RankInput, tuple[np.ndarray, str]] = MicroBatcher(
            rank, cfg.batch_max_requests, 0.0, on_batch=self._on_batch
        )
        self.popular: list[tuple[str, float]] = []
        self.popular_ranking = PopularRanking([], catalog.get)
        self.removed: set[str] = set()
        self.popular_loaded = False
        self.last_features: OrderedDict[str, UserFeatures] = OrderedDict()
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self.batcher.start()
        self.requests.start()
        with contextlib.suppress(DependencyError):
            await self.refresh_popular()
        await self._refresh_exploration()
        self._tasks.append(asyncio.create_task(self._refresh_loop(), name="popular-refresh"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.requests.stop()
        await self.batcher.stop()

    async def refresh_popular(self) -> None:
        """The trending list and removed items into memory (kept as they were on failure)."""
        breaker = self.breakers["popular"]
        n = self.cfg.popular_size
        popular = await breaker.call(
            lambda: within("popular", self.popular_store.popular(self.cfg.popular_window, n), 1.0)
        )
        removed = await breaker.call(lambda: within("popular", self.popular_store.removed(), 1.0))
        self.popular, self.removed = popular, removed
        self.popular_loaded = True
        self.catalog.set_popularity(dict(popular))
        self.popular_ranking = PopularRanking(popular, self.catalog.get)

    async def refresh_exploration(self) -> None:
        """The rotation's order rebuilt from the catalog in memory and the shows counted so
        far: snapshot on the loop, the sort on a thread, installed on the loop."""
        explorer = self.explorer
        if explorer is None:
            return
        rotation = explorer.rotation
        # The follower's thread writes the catalog: copy it (a C-level copy holds the GIL).
        ids, shown, tie = rotation.snapshot(list(self.catalog.items))
        removed = self.removed | set(self.catalog.removed)
        order = await asyncio.to_thread(least_shown_order, ids, removed, shown, tie)
        rotation.install(order)

    async def _refresh_exploration(self) -> None:
        try:
            await self.refresh_exploration()
        except Exception:  # exploration is optional: the old order stays, never an error
            log.warning("exploration refresh failed", exc_info=True)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.refresh_s)  # a periodic refresh, not a race
            await self._refresh_exploration()
            try:
                await self.refresh_popular()
            except DependencyError as exc:
                self.metrics.dependency_errors.labels("popular", type(exc).__name__).inc()

    # --- the request path: the edges, per request ------------------------------------------

    async def recommend(self, q: RecQuery) -> Answer:
        """An answer at some level, or `Overloaded` from admission."""
        started = time.monotonic()
        key = (q.user_id, q.k, q.recent_item_ids)
        # An HTTP request reached this handler after waiting in the socket and uvicorn's
        # parser for about the event loop's lag: its budget started then, as the client's
        # did. (A topic request's budget already counts its age from `sent_at`.)
        waited = self.loop_lag() if q.channel == "http" else 0.0
        deadline = Deadline(q.budget_ms, start=started - waited)
        if self.cache.get(key) is not None:
            # A hit skips admission (it costs nothing); XFetch may refresh it in the background.
            cached, _ = await self.cache.get_or_compute(
                key, lambda: self._compute(q, deadline), cacheable=_cacheable
            )
            child = self.metrics.child
            child(self.metrics.cache, "hit").inc()
            child(shared_metrics.CACHE_REQUESTS, "responses", "hit").inc()
            return self._finish(await self._without_removed(cached), q, started)
        async with self.admission.slot(q.priority, deadline.budget_s * self.cfg.max_queue_share):
            self.metrics.in_flight.set(self.admission.in_flight)
            answer, source = await self.cache.get_or_compute(
                key, lambda: self._compute(q, deadline), cacheable=_cacheable
            )
        child = self.metrics.child
        child(self.metrics.cache, source).inc()
        child(
            shared_metrics.CACHE_REQUESTS, "responses", "miss" if source == "computed" else "hit"
        ).inc()
        if source == "hit":  # a computed (or coalesced) answer was checked as it was made
            answer = await self._without_removed(answer)
        return self._finish(answer, q, started)

    def _compute(self, q: RecQuery, deadline: Deadline) -> asyncio.Future[Answer]:
        """The request's answer, made in the batch it joins (its future: no task of its own)."""
        return self.requests.submit_future(Member(q, deadline))

    async def _without_removed(self, answer: Answer) -> Answer:
        """Drop items removed since the answer was made (or cached): a removal is honoured at
        answer time, not at the next refresh of the in-memory set. One SMISMEMBER (~20 us);
        if Redis does not answer in time, the in-memory sets decide."""
        if not answer.item_ids:
            return answer
        gone = await self._removed_among(answer.item_ids)
        if gone:
            self.removed |= gone
        return answer.without(gone)

    async def _removed_among(self, ids: list[str]) -> set[str]:
        try:
            gone = await self.breakers["popular"].call(
                lambda: within(
                    "popular",
                    self.popular_store.removed_among(ids),
                    self.cfg.removed_check_ms / 1000.0,
                )
            )
        except DependencyError:
            gone = {i for i in ids if i in self.removed or i in self.catalog.removed}
        return gone

    def popular_answer(self, q: RecQuery) -> Answer:
        """The POPULAR answer from memory alone (no dependency call): for shed topic requests."""
        started = time.monotonic()
        exclude = self.removed | self.catalog.removed | set(q.recent_item_ids)
        ranking = self._popular_ranking()
        top = rerank_arrays(
            ranking.item_ids,
            ranking.scores_for(q.recent_item_ids),
            q.k,
            exclude,
            self.catalog.get,
            self.cfg.max_genre_share,
        )
        answer = Answer(
            correlation_id=q.request_id,
            user_id=q.user_id,
            item_ids=[i for i, _ in top],
            scores=[float(s) for _, s in top],
            explanations=[None] * len(top),
            level="POPULAR",
            model_version=None,
            latency_ms=0.0,
            served_at=datetime.now(UTC),
        )
        return self._finish(answer, q, started)

    def _finish(self, answer: Answer, q: RecQuery, started: float) -> Answer:
        latency_ms = (time.monotonic() - started) * 1000.0
        answer = answer.stamped(q.request_id, latency_ms)
        m, child = self.metrics, self.metrics.child
        child(m.requests, q.channel, answer.level).inc()
        child(m.latency, q.channel).observe(latency_ms / 1000.0)
        child(shared_metrics.DEGRADATION, answer.level).inc()
        child(shared_metrics.REQUEST_SECONDS, q.channel).observe(latency_ms / 1000.0)
        if self.impressions is not None:
            self.impressions.publish(answer, q.channel, q.principal)
        return answer

    # --- the request path: everything between, once per batch -----------------------------

    async def _handle_batch(
        self, batch: list[Member], reply: Callable[[int, Answer | BaseException], None]
    ) -> None:
        """Every member's answer, the work shared: one read, one model call, one re-rank and
        one explanations trip for the members ready together (normally all of them; a
        member whose deadline passes while the model runs is answered first, on its own)."""
        cfg = self.cfg
        reads = await self._read_batch(batch)
        base_exclude = self.removed | self.catalog.removed
        plans: list[_Plan] = []
        for index, (member, (feats, cands, hist)) in enumerate(zip(batch, reads, strict=True)):
            user, level = self._user_features(member.q, feats, hist)
            plan = _Plan(index, member, user, level, base_exclude | set(user.recent_items))
            if not cfg.fallback and (failed := _failed_read(feats, cands)) is not None:
                plan.error = failed  # comparison runs only: the failure is the answer (a 500)
                plans.append(plan)
                continue
            if not isinstance(cands, Candidates) or not cands.item_ids:
                plan.level = "POPULAR"
                ranking = self._popular_ranking()
                plan.ids, plan.scores = ranking.item_ids, ranking.scores_for(user.recent_items)
            else:
                plan.cands = cands.head(cfg.max_candidates)
                plan.ids = plan.cands.item_ids
                if (
                    isinstance(feats, FeatureRead)
                    and user.n_interactions < cfg.cold_start_interactions
                ):
                    # A known user with too little history: the retrieval score (fused for
                    # session users, candidates.builder) ranks them better than the ranker,
                    # which leans on history they do not have (ADR 0046's cold-start table).
                    plan.scores = np.asarray(plan.cands.scores, dtype=np.float64)
                    plan.model_version = plan.cands.model_version or "retrieval"
                else:
                    plan.needs_model = True
            plans.append(plan)
        async for ready in self._rank_batch(plans):
            for plan, answer in zip(ready, await self._answers(ready), strict=True):
                reply(plan.index, answer)

    async def _answers(self, plans: list[_Plan]) -> list[Answer | BaseException]:
        """The answers of ranked plans: re-ranked together, explained and checked against
        removals in one round trip."""
        cfg = self.cfg
        explorer = self.explorer
        tops = rerank_many(
            [p.ids for p in plans],
            [p.scores for p in plans],
            [p.member.q.k for p in plans],
            [p.exclude for p in plans],
            self.catalog.get,
            cfg.max_genre_share,
        )
        for plan, top in zip(plans, tops, strict=True):
            k = plan.member.q.k
            if len(top) < k and plan.level != "POPULAR":
                # Too few candidates survived the rules: top up from the trending list, in
                # its order, below every ranked item.
                have = {i for i, _ in top} | plan.exclude
                floor = min((s for _, s in top), default=0.0)
                extra = [i for i, _ in self._popular_list()]
                extra_scores = floor - 1.0 - np.arange(len(extra), dtype=np.float64)
                top += rerank_arrays(extra, extra_scores, k - len(top), have, self.catalog.get, 1.0)
            if explorer is not None and plan.error is None:
                top = self._explore(explorer, plan, top)
            plan.top = top
            plan.explanations = [None] * len(top)
        gone = await self._explain_batch([p for p in plans if p.error is None])
        served_at = datetime.now(UTC)
        answers: list[Answer | BaseException] = []
        for plan in plans:
            if plan.error is not None:
                answers.append(plan.error)
                continue
            q = plan.member.q
            answers.append(
                Answer(
                    correlation_id=q.request_id,
                    user_id=q.user_id,
                    item_ids=[i for i, _ in plan.top],
                    scores=[float(s) for _, s in plan.top],
                    explanations=plan.explanations,
                    level=plan.level,
                    model_version=plan.model_version,
                    latency_ms=plan.member.deadline.elapsed_ms(),
                    served_at=served_at,
                    explored=frozenset(plan.explored),
                )
            )
        # Checked once as they are made, for their callers and every caller coalesced on
        # them (a cached copy is checked again on each hit, `recommend`): the explanations'
        # trip said which are removed, or one SMISMEMBER for all of them does.
        if gone is None:
            ids = list({i for a in answers if isinstance(a, Answer) for i in a.item_ids})
            gone = await self._removed_among(ids) if ids else set()
        if gone:
            self.removed |= gone
            answers = [a.without(gone) if isinstance(a, Answer) else a for a in answers]
        if explorer is not None:  # every item shown counts, ranked or explored
            for a in answers:
                if isinstance(a, Answer):
                    explorer.rotation.record(a.item_ids)
        return answers

    def _explore(
        self, explorer: Explorer, plan: _Plan, top: list[tuple[str, float]]
    ) -> list[tuple[str, float]]:
        """The member's answer with exploration's slots, if its variant explores; the answer
        as it was when the rotation has nothing to give or fails (never an error)."""
        try:
            if not explorer.applies(plan.member.q.user_id):
                return top
            top, plan.explored = explorer.explore(top, plan.member.q.k, plan.exclude)
        except Exception:
            log.warning("exploration failed", exc_info=True)
            return top
        if plan.explored:
            self.metrics.explored.inc(len(plan.explored))
        return top

    async def _read_batch(self, batch: list[Member]) -> list[UserReads]:
        cfg = self.cfg
        timeouts = [
            m.deadline.for_dependency(
                cfg.dependency_share, cfg.dependency_cap_ms, cfg.rank_reserve_ms
            )
            for m in batch
        ]
        if self.reads is None:  # separate stores: three reads a member, each its own deadline
            return list(
                await asyncio.gather(
                    *(
                        self._read_separate(m.q.user_id, t)
                        for m, t in zip(batch, timeouts, strict=True)
                    )
                )
            )
        if not hasattr(self.reads, "read_many"):  # a one-user trip each
            return list(
                await asyncio.gather(
                    *(
                        self._read_merged(m.q.user_id, t)
                        for m, t in zip(batch, timeouts, strict=True)
                    )
                )
            )
        return await self._read_many([m.q.user_id for m in batch], timeouts)

    async def _read_separate(self, user_id: str, timeout_s: float) -> UserReads:
        feats, cands, hist = await asyncio.gather(
            self._guarded("features", lambda: self.features.read(user_id), timeout_s),
            self._guarded("candidates", lambda: self.candidates.read(user_id), timeout_s),
            self._history(user_id, timeout_s),
        )
        return feats, cands, hist

    async def _read_many(self, user_ids: list[str], timeouts: list[float]) -> list[UserReads]:
        """Every member's features, candidates and history in one round trip, with what
        `_guarded` does for each read: a part whose breaker is open is not asked for; the
        trip waits as long as the tightest member's share allows; each breaker is settled by
        each member's outcome of its part (a part that failed for one member counts once,
        against its own dependency; a failed or late trip counts against every part asked,
        for every member). A member whose budget is spent is not read for (not the
        dependencies' fault) and degrades alone."""
        names = ["features", "candidates"]
        if self.history is not None and self.cfg.history_len > 0:
            names.append("history")
        out: list[UserReads] = [
            (
                DependencyTimeout("features", "no budget left"),
                DependencyTimeout("candidates", "no budget left"),
                [],
            )
        ] * len(user_ids)
        live = [n for n, t in enumerate(timeouts) if t > 0]
        if not live:
            return out
        timeout_s = min(timeouts[n] for n in live)
        refused: dict[str, object] = {}
        asked = []
        for name in names:
            if self.breakers[name].allow():
                asked.append(name)
            else:
                refused[name] = BreakerOpen(name, "circuit open")
        rows: list[dict[str, object]] = [{} for _ in live]
        if asked:
            assert self.reads is not None
            try:
                async with asyncio.timeout(timeout_s):
                    rows = await self.reads.read_many(
                        [user_ids[n] for n in live], tuple(asked), self.cfg.history_len
                    )
            except TimeoutError:
                late = f"no answer within {timeout_s * 1000:.1f} ms"
                rows = [{n: DependencyTimeout(n, late) for n in asked}] * len(live)
            except DependencyError as exc:
                rows = [{n: DependencyError(n, exc.reason) for n in asked}] * len(live)
            except BaseException:
                for name in asked:
                    self.breakers[name].neutral()  # cancelled or a bug: neither health nor harm
                raise

            def blame(exc: DependencyError) -> bool:
                return self._dependency_at_fault(exc, timeout_s)

            for row in rows:
                for name in asked:
                    value = row[name]
                    error = value if isinstance(value, DependencyError) else None
                    self.breakers[name].settle(error, blame=blame)
        errors = self.metrics.dependency_errors
        for n, row in zip(live, rows, strict=True):
            got = {**refused, **row}
            for name, value in got.items():
                if isinstance(value, DependencyError):
                    errors.labels(name, type(value).__name__).inc()
            hist = got.get("history", [])
            out[n] = (
                got["features"],  # type: ignore[assignment]
                got["candidates"],  # type: ignore[assignment]
                hist if isinstance(hist, list) else [],
            )
        return out

    async def _rank_batch(self, plans: list[_Plan]) -> AsyncIterator[list[_Plan]]:
        """The plans as they become ready to answer, in groups: model scores for every plan
        that needs them from one call on the model's thread. Each member waits at most its
        own time left (less `rank_reserve_ms`) and asks the breaker on its own, as a request
        did (a half-open breaker lets one member through as its trial); one the model failed,
        refused or kept past its deadline gets SIMPLE_RANKING's scores and is answered then,
        without waiting for the others. Normally every plan is ready at once: one group."""
        breaker = self.breakers["model"]
        reserve_s = self.cfg.rank_reserve_ms / 1000.0
        ready: list[_Plan] = []
        asked: list[tuple[_Plan, float]] = []
        for plan in plans:
            if not plan.needs_model:
                ready.append(plan)
                continue
            timeout = plan.member.deadline.remaining_s() - reserve_s
            if timeout <= 0:  # spent before the call: not the model's fault, not counted
                self._simple(plan)
                ready.append(plan)
            elif not breaker.allow():
                self._simple(plan, BreakerOpen("model", "circuit open"))
                ready.append(plan)
            else:
                asked.append((plan, timeout))
        if not asked:
            yield ready
            return
        futures = self.batcher.submit_many([RankInput(p.user, list(p.ids)) for p, _ in asked])
        now = time.monotonic()
        ends = [now + timeout for _, timeout in asked]
        ready_end = min((p.member.deadline.end - reserve_s for p in ready), default=None)
        pending = set(range(len(asked)))
        while pending:
            nearest = min(ends[n] for n in pending)
            if ready and ready_end is not None:
                nearest = min(nearest, ready_end)
            left = nearest - time.monotonic()
            if left > 0:
                await asyncio.wait(
                    [futures[n] for n in pending], timeout=left, return_when=FIRST_COMPLETED
                )
            now = time.monotonic()
            for n in sorted(pending):
                plan, timeout = asked[n]
                future = futures[n]
                if not future.done() and ends[n] > now:
                    continue
                pending.discard(n)
                if not future.done():
                    future.cancel()  # skipped by the model if its batch has not started
                    late = f"no answer within {timeout * 1000:.1f} ms"
                    self._model_outcome(plan, timeout, DependencyTimeout("model", late))
                else:
                    self._model_outcome(plan, timeout, future.exception(), future)
                ready.append(plan)
            if ready:  # answered now: nothing ready waits for the model's stragglers
                yield ready
                ready, ready_end = [], None

    def _model_outcome(
        self,
        plan: _Plan,
        timeout_s: float,
        error: BaseException | None,
        future: asyncio.Future[tuple[np.ndarray, str]] | None = None,
    ) -> None:
        breaker = self.breakers["model"]
        if error is None:
            assert future is not None
            scores, version = future.result()
            plan.scores, plan.model_version = np.asarray(scores, dtype=np.float64), version
            breaker.settle(None)
        elif isinstance(error, DependencyError):
            breaker.settle(error, blame=lambda exc: self._dependency_at_fault(exc, timeout_s))
            self._simple(plan, error)
        else:  # a bug: this member's answer fails with it; neither health nor harm
            breaker.neutral()
            plan.error = error

    def _simple(self, plan: _Plan, error: DependencyError | None = None) -> None:
        """The member's SIMPLE_RANKING: its retrieval scores, popularity breaking ties."""
        if error is not None:
            self.metrics.dependency_errors.labels("model", type(error).__name__).inc()
        assert plan.cands is not None
        plan.scores = simple_scores(plan.cands, self.catalog.popularity)
        plan.model_version = None
        plan.level = worst(plan.level, "SIMPLE_RANKING")

    async def _explain_batch(self, plans: list[_Plan]) -> set[str] | None:
        """Every member's explanations (into `plan.explanations`), in one round trip when
        the explainer takes batches; returns which items are removed now, if it checked
        (None: the caller checks)."""
        explain = self.explain
        if explain is None or not plans:
            return None
        lefts = [p.member.deadline.remaining_s() for p in plans]
        if hasattr(explain, "explain_many"):
            try:
                texts, gone = await explain.explain_many(
                    [
                        (p.member.q.user_id, [i for i, _ in p.top], p.user.recent_items)
                        for p in plans
                    ],
                    lefts,
                )
            except Exception:  # explanations are decoration: never fail an answer for them
                log.exception("explanations failed")
                return None
            for plan, member_texts in zip(plans, texts, strict=True):
                plan.explanations = member_texts
            return gone
        # An explainer of one answer at a time (tests, custom wiring): each member its own.
        results = await asyncio.gather(
            *(self._explain_one(explain, p, left) for p, left in zip(plans, lefts, strict=True))
        )
        if any(gone is None for gone in results):
            return None  # one of them could not check: the batch's one SMISMEMBER does
        return set().union(*results)  # type: ignore[arg-type]

    async def _explain_one(self, explain: Explainer, plan: _Plan, left_s: float) -> set[str] | None:
        item = RecommendedItem.model_construct
        items = [item(item_id=i, score=float(s)) for i, s in plan.top]
        try:
            items, gone = await explain(
                plan.member.q.user_id, items, plan.user.recent_items, left_s
            )
        except Exception:  # explanations are decoration: never fail an answer for them
            log.exception("explanations failed")
            return None
        plan.top = [(it.item_id, it.score) for it in items]
        plan.explanations = [it.explanation for it in items]
        return gone

    async def _guarded(
        self, name: str, call: Callable[[], Awaitable[T]], timeout_s: float
    ) -> T | DependencyError:
        if timeout_s <= 0:
            # The request spent its budget before this call: not the dependency's fault, so
            # the breaker does not count it.
            return DependencyTimeout(name, "no budget left")
        try:
            return await self.breakers[name].call(
                lambda: within(name, call(), timeout_s),
                blame=lambda exc: self._dependency_at_fault(exc, timeout_s),
            )
        except DependencyError as exc:
            self.metrics.dependency_errors.labels(name, type(exc).__name__).inc()
            return exc

    async def _read_merged(self, user_id: str, timeout_s: float) -> UserReads:
        """Features, candidates and history in one round trip (`RequestReads`), with what
        `_guarded` does for each read: a part whose breaker is open is not asked for, all
        parts share the deadline the separate reads each had, and each breaker is settled by
        its own part's outcome (a part that failed alone counts against its dependency
        alone; a failed or late round trip counts against every part asked for)."""
        names = ["features", "candidates"]
        if self.history is not None and self.cfg.history_len > 0:
            names.append("history")
        if timeout_s <= 0:  # the request spent its budget: not the dependencies' fault
            return (
                DependencyTimeout("features", "no budget left"),
                DependencyTimeout("candidates", "no budget left"),
                [],
            )
        got: dict[str, object] = {}
        asked = []
        for name in names:
            if self.breakers[name].allow():
                asked.append(name)
            else:
                got[name] = BreakerOpen(name, "circuit open")
        if asked:
            assert self.reads is not None
            try:
                async with asyncio.timeout(timeout_s):
                    read = await self.reads.read(user_id, tuple(asked), self.cfg.history_len)
            except TimeoutError:
                late = f"no answer within {timeout_s * 1000:.1f} ms"
                read = {n: DependencyTimeout(n, late) for n in asked}
            except DependencyError as exc:
                read = {n: DependencyError(n, exc.reason) for n in asked}
            except BaseException:
                for name in asked:
                    self.breakers[name].neutral()  # cancelled or a bug: neither health nor harm
                raise
            for name in asked:
                value = read[name]
                error = value if isinstance(value, DependencyError) else None
                self.breakers[name].settle(
                    error, blame=lambda exc: self._dependency_at_fault(exc, timeout_s)
                )
                got[name] = value
        for name, value in got.items():
            if isinstance(value, DependencyError):
                self.metrics.dependency_errors.labels(name, type(value).__name__).inc()
        hist = got.get("history", [])
        return (
            got["features"],  # type: ignore[return-value]
            got["candidates"],
            hist if isinstance(hist, list) else [],
        )

    def _dependency_at_fault(self, exc: DependencyError, timeout_s: float) -> bool:
        """A timeout while this worker's own event loop ran late (lag past a quarter of the
        timeout), or while waiting for the ranker behind other requests, is the worker's
        overload, not the dependency's failure: the breaker does not count it. Otherwise an
        overloaded worker opened its model and feature breakers and served SIMPLE_RANKING to
        everyone for `breaker_reset_s` after every load spike."""
        if not isinstance(exc, DependencyTimeout):
            return True
        if self.loop_lag() > timeout_s / 4:
            return False
        # The model's requests wait in the batcher's queue first: a timeout there is the
        # worker's overload (answered at SIMPLE_RANKING); only a slow or hung model itself
        # opens its breaker, or every request would fall back while it could rank most.
        # A request that reached the model late has a short timeout left: judge the model by
        # half the request's budget at least.
        limit_s = max(timeout_s, self.cfg.request_budget_ms / 2000.0)
        return exc.dependency != "model" or self.batcher.slow(limit_s)

    async def _history(self, user_id: str, timeout_s: float) -> list[str]:
        """The user's last `history_len` items (the ranker's training history); [] when not
        configured, not stored, or the store fails (Feast's last 10 are used then)."""
        if self.history is None or self.cfg.history_len <= 0:
            return []
        n = self.cfg.history_len
        read = await self._guarded("history", lambda: self.history.recent(user_id, n), timeout_s)
        return read if isinstance(read, list) else []

    def _user_features(
        self, q: RecQuery, read: FeatureRead | DependencyError | None, history: list[str]
    ) -> tuple[UserFeatures, Level]:
        """The features to rank with and the level they allow; a longer stored history
        replaces Feast's last 10 items, and the session's recent items are appended (newest
        last) either way."""
        level: Level = "FULL"
        if isinstance(read, FeatureRead):
            user = read.features
            stale_s = self.cfg.features_stale_s
            if stale_s > 0 and (
                read.updated_at is None
                or (datetime.now(UTC) - read.updated_at).total_seconds() > stale_s
            ):
                level = "STALE_FEATURES"
            self._remember(user)
        else:
            level = "STALE_FEATURES"  # missing (None) or the store failed: last seen, or none
            user = self.last_features.get(q.user_id) or UserFeatures(user_id=q.user_id)
        if len(history) > len(user.recent_items):
            # Feast's items newer than the stored history (its writer may lag) stay at the end.
            tail = set(history[-len(user.recent_items) :]) if user.recent_items else set()
            newer = [i for i in user.recent_items if i not in tail]
            merged = (history + newer)[-self.cfg.history_len :]
            user = user.model_copy(update={"recent_items": merged})
        if q.recent_item_ids:
            recent = [i for i in user.recent_items if i not in q.recent_item_ids]
            user = user.model_copy(update={"recent_items": recent + list(q.recent_item_ids)})
        return user, level

    def _remember(self, user: UserFeatures) -> None:
        self.last_features[user.user_id] = user
        self.last_features.move_to_end(user.user_id)
        if len(self.last_features) > self.cfg.cache_max_entries:
            self.last_features.popitem(last=False)

    def _popular_ranking(self) -> PopularRanking:
        if self.popular:
            return self.popular_ranking
        return PopularRanking(self._popular_list(), self.catalog.get)

    def _popular_list(self) -> list[tuple[str, float]]:
        if self.popular:
            return self.popular
        # Never loaded (Redis down since start): the catalog by popularity is the last resort.
        items = sorted(self.catalog.items.values(), key=lambda i: i.popularity, reverse=True)
        return [(i.item_id, i.popularity) for i in items[: self.cfg.popular_size]]

    # --- metrics hooks ---------------------------------------------------------------------

    def _breaker(self, name: str, state: State) -> None:
        self.metrics.breaker_state.labels(name).set(int(state))
        shared_metrics.BREAKER_STATE.labels("serving", name).set(int(state))
        log.warning("breaker %s is now %s", name, state.name)

    def _on_batch(self, size: int, seconds: float) -> None:
        self.metrics.batch_size.observe(size)
        self.metrics.batch_seconds.observe(seconds)


__all__ = ["DependencyTimeout", "Member", "Recommender"]
