"""The invalidation processor's decisions, without I/O: decoded events in, effects out.

Responsibilities:
- turn each kind of change into the keys it affects:
  item upsert or new vector -> users it is near (`affected.TasteModel`) plus users whose
  candidates already hold it (`reverse_index`); removal -> users whose candidates hold it;
  ranker/retriever promotion or rollback -> every user, as a sweep; index swap -> the
  nearness thresholds are recomputed (the vectors themselves were handled as they came);
- coalescing mode: hand the keys to the `Coalescer` (window, value order, sweep) and let the
  processor drain it through the rate bound as `RefreshCommand(mode="refresh")`;
- broadcast mode (benchmarks only, today's behaviour): return every affected key at once as
  a deletion, with no window, no order and no bound;
- report removed item ids so the processor adds them to `catalog:removed` before anything
  else: serving filters them at once, correctness never waits for a refresh.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from infra.settings import InvalidationSettings
from invalidation.affected import TasteModel
from invalidation.coalescer import Coalescer, PendingRefresh
from invalidation.reverse_index import ReverseIndex
from topics import (
    CandidatesUpdated,
    CatalogItem,
    Interaction,
    ItemVector,
    RefreshCommand,
    RegistryChange,
)
from topics.stores import CandidateList

PROMOTION_KINDS = ("ranker", "retriever")


@dataclass
class Effects:
    """What the processor must do after a batch: mark removals, delete keys (broadcast)."""

    removed_items: list[str] = field(default_factory=list)
    deletions: list[RefreshCommand] = field(default_factory=list)
    queued: int = 0


class Invalidator:
    """Holds the processor's state (tastes, reverse index, queue) and makes its decisions."""

    def __init__(
        self, cfg: InvalidationSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.cfg = cfg
        self.model = TasteModel(cfg, clock=clock)
        self.reverse = ReverseIndex()
        self.coalescer = Coalescer(cfg.max_pending, priority_of=self.model.last_seen)
        self._emit = True

    @contextmanager
    def state_only(self) -> Iterator[None]:
        """Apply history: update state and report removals, but issue no refresh."""
        self._emit = False
        try:
            yield
        finally:
            self._emit = True

    @property
    def broadcast(self) -> bool:
        return self.cfg.mode == "broadcast"

    # -- inputs -------------------------------------------------------------------------------

    def on_interactions(self, events: Iterable[Interaction]) -> None:
        for e in events:
            self.model.observe(e.user_id, e.item_id, e.ts.timestamp(), e.kind, e.rating)

    def on_candidates(self, lists: Iterable[CandidateList]) -> None:
        for cand in lists:
            self.reverse.set_candidates(cand.user_id, (c.item_id for c in cand.items))

    def on_candidates_gone(self, notices: Iterable[CandidatesUpdated]) -> None:
        """A notice whose list is no longer in Redis: the user holds nothing now."""
        for notice in notices:
            self.reverse.set_candidates(notice.user_id, ())

    def on_items(self, items: Iterable[CatalogItem]) -> Effects:
        removed = [i.item_id for i in items if i.op == "remove"]
        upserted = [i.item_id for i in items if i.op == "upsert"]
        effects = self._removals(removed)
        # An upsert matters once its item has a vector; before that, its vector will come.
        return self._merge(effects, self._changed(upserted, "item_upsert"))

    def on_vectors(
        self, vectors: Iterable[tuple[ItemVector, np.ndarray]], tombstones: Iterable[str] = ()
    ) -> Effects:
        changed = [
            v.item_id
            for v, array in vectors
            if self.model.items.upsert(v.item_id, array, v.content_hash)
        ]
        self.model.items_changed(changed)
        effects = self._removals(list(tombstones))
        return self._merge(effects, self._changed(changed, "vector"))

    def on_registry(self, change: RegistryChange) -> Effects:
        cause = f"{change.kind}:{change.version}"
        if change.kind == "index":
            self.model.thresholds()  # the new snapshot sets the nearness bar from now on
            return Effects()
        if change.kind not in PROMOTION_KINDS or change.action == "publish":
            return Effects()
        if not self._emit:
            return Effects()
        users = self.model.users_by_value()
        if self.broadcast:
            return Effects(deletions=[self._delete(u, "model_promotion", [cause]) for u in users])
        self.coalescer.start_sweep(users, cause)
        return Effects(queued=len(users))

    # -- outputs ------------------------------------------------------------------------------

    def close_window(self) -> int:
        return self.coalescer.close_window()

    def next_command(self) -> RefreshCommand | None:
        pending = self.coalescer.pop()
        return None if pending is None else self._refresh(pending)

    # -- helpers ------------------------------------------------------------------------------

    def _removals(self, item_ids: list[str]) -> Effects:
        if not item_ids:
            return Effects()
        for item in item_ids:
            self.model.items.remove(item)
        self.model.items_changed(item_ids)
        effects = Effects(removed_items=list(item_ids))
        for item in item_ids:
            effects = self._merge(
                effects, self._affect(self.reverse.users_of(item), "item_removal", item)
            )
        return effects

    def _changed(self, item_ids: list[str], reason: str) -> Effects:
        effects = Effects()
        if not item_ids:
            return effects
        near = self.model.near_users(item_ids)
        for item in dict.fromkeys(item_ids):
            users = set(near.get(item, ())) | self.reverse.users_of(item)
            effects = self._merge(effects, self._affect(users, reason, item))
        return effects

    def _affect(self, users: Iterable[str], reason: str, cause: str) -> Effects:
        users = list(users)
        if not self._emit or not users:
            return Effects()
        if self.broadcast:
            return Effects(deletions=[self._delete(u, reason, [cause]) for u in users])
        return Effects(queued=self.coalescer.add(users, reason, cause))

    @staticmethod
    def _merge(a: Effects, b: Effects) -> Effects:
        return Effects(
            removed_items=a.removed_items + b.removed_items,
            deletions=a.deletions + b.deletions,
            queued=a.queued + b.queued,
        )

    @staticmethod
    def _delete(user_id: str, reason: str, causes: list[str]) -> RefreshCommand:
        return RefreshCommand(user_id=user_id, reason=reason, cause_ids=causes, mode="delete")

    @staticmethod
    def _refresh(pending: PendingRefresh) -> RefreshCommand:
        return RefreshCommand(
            user_id=pending.user_id,
            reason=pending.reason,
            cause_ids=pending.cause_ids,
            mode="refresh",
        )
