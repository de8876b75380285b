"""The invalidation processor's decisions, without I/O: decoded events in, effects out.

Responsibilities:
- apply every change to the state at once (item vectors, removals, users' recent items,
  the reverse index), so later decisions see it;
- coalescing mode: mark the changed item dirty and wait until it has been quiet for
  `window_s` (at most `max_delay_s`): a thousand upserts of one item are one change, and
  every item that became quiet by a tick is handled in one pass (one matrix product);
  the pass turns items into keys: upsert or new vector -> users the item is near
  (`affected.TasteModel`) plus users whose candidates hold it (`reverse_index`); removal ->
  users whose candidates hold it. The keys go to the `Coalescer` (one refresh per key while
  it waits, most active users first) and leave through the processor's rate bound as
  `RefreshCommand(mode="refresh")`;
- a new or changed vector also waits for the next index swap (at most `await_index_s`), so
  the candidates recomputed on its refresh can find the item in the index;
- a ranker/retriever promotion or rollback concerns every user: one sweep, spread at the
  same bounded rate; an index swap recomputes the nearness thresholds (its vectors were
  handled as they came);
- broadcast mode (benchmarks only, today's behaviour): every change is handled at once, its
  affected keys returned as deletions, with no debounce, no coalescing and no bound;
- report removed item ids so the processor adds them to `catalog:removed` before anything
  else: serving filters them at once, correctness never waits for a refresh.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from streamrec.infra.settings import InvalidationSettings
from streamrec.invalidation.affected import TasteModel
from streamrec.invalidation.coalescer import REASON_ORDER, Coalescer, PendingRefresh
from streamrec.invalidation.reverse_index import ReverseIndex
from streamrec.topics import (
    CandidatesUpdated,
    CatalogItem,
    Interaction,
    ItemVector,
    RefreshCommand,
    RegistryChange,
)
from streamrec.topics.stores import CandidateList

PROMOTION_KINDS = ("ranker", "retriever")


@dataclass
class Effects:
    """What the processor must do after a batch: mark removals (and items brought back),
    delete keys (broadcast)."""

    removed_items: list[str] = field(default_factory=list)
    restored_items: list[str] = field(default_factory=list)
    deletions: list[RefreshCommand] = field(default_factory=list)
    queued: int = 0

    def __iadd__(self, other: Effects) -> Effects:
        self.removed_items += other.removed_items
        self.restored_items += other.restored_items
        self.deletions += other.deletions
        self.queued += other.queued
        return self


@dataclass
class DirtyItem:
    reason: str
    first_s: float
    last_s: float
    changes: int = 1
    needs_index: bool = False


@dataclass
class EngineStats:
    passes: int = 0
    items_changed: int = 0
    item_changes: int = 0


class Invalidator:
    """Holds the processor's state (tastes, reverse index, queue) and makes its decisions."""

    def __init__(
        self, cfg: InvalidationSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.model = TasteModel(cfg, clock=clock)
        self.reverse = ReverseIndex()
        self.coalescer = Coalescer(cfg.max_pending, priority_of=self.model.last_seen)
        self.stats = EngineStats()
        self._dirty: dict[str, DirtyItem] = {}
        self._last_index_swap_s = -float("inf")
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

    @property
    def dirty(self) -> int:
        """Changed items still waiting for quiet."""
        return len(self._dirty)

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
        items = list(items)
        last_op = {i.item_id: i.op for i in items}  # in a batch, an item's last op stands
        removed = [i for i, op in last_op.items() if op == "remove"]
        restored = [i for i, op in last_op.items() if op == "upsert"]
        effects = Effects(removed_items=removed, restored_items=restored)
        for item in removed:
            self.model.items.remove(item)
        self.model.items_changed(removed)
        for item in removed:
            effects += self._changed(item, "item_removal")
        for item in items:
            # An upsert matters once its item has a vector; before that, the vector will come.
            if item.op == "upsert" and item.item_id in self.model.items:
                effects += self._changed(item.item_id, "item_upsert")
        return effects

    def on_vectors(
        self, vectors: Iterable[tuple[ItemVector, np.ndarray]], tombstones: Iterable[str] = ()
    ) -> Effects:
        changed = [
            v.item_id
            for v, array in vectors
            if self.model.items.upsert(v.item_id, array, v.content_hash)
        ]
        gone = [i for i in tombstones if self.model.items.remove(i)]
        self.model.items_changed(changed + gone)
        effects = Effects()
        for item in changed:
            effects += self._changed(item, "vector", needs_index=True)
        for item in gone:
            effects += self._changed(item, "item_removal")
        return effects

    def on_registry(self, change: RegistryChange) -> Effects:
        cause = f"{change.kind}:{change.version}"
        if change.kind == "index":
            # Vectors changed before this swap are searchable now: their refreshes may go.
            self._last_index_swap_s = self.clock()
            self.model.thresholds()
            return Effects()
        if (
            not self._emit
            or change.kind not in PROMOTION_KINDS
            or change.action in ("publish", "canary")
        ):
            return Effects()
        users = self.model.users_by_value()
        if self.broadcast:
            return Effects(deletions=[_delete(u, "model_promotion", [cause]) for u in users])
        self.coalescer.start_sweep(users, cause)
        return Effects(queued=len(users))

    # -- time ---------------------------------------------------------------------------------

    def tick(self) -> int:
        """Handle every dirty item that became quiet, in one pass; returns the keys queued."""
        now = self.clock()
        quiet = [item for item, d in self._dirty.items() if self._ready(d, now)]
        if not quiet:
            return 0
        batch = {item: self._dirty.pop(item) for item in quiet}
        self.stats.passes += 1
        near = self.model.near_users([i for i, d in batch.items() if d.reason != "item_removal"])
        for item, d in batch.items():
            users = set(near.get(item, ())) | self.reverse.users_of(item)
            self.coalescer.add(users, d.reason, item)
        return self.coalescer.close_window()

    def next_command(self) -> RefreshCommand | None:
        pending = self.coalescer.pop()
        return None if pending is None else _refresh(pending)

    # -- helpers ------------------------------------------------------------------------------

    def _ready(self, d: DirtyItem, now: float) -> bool:
        quiet = now - d.last_s >= self.cfg.window_s or now - d.first_s >= self.cfg.max_delay_s
        if not quiet or not d.needs_index or self.cfg.await_index_s <= 0:
            return quiet
        return self._last_index_swap_s > d.last_s or now - d.last_s >= self.cfg.await_index_s

    def _changed(self, item: str, reason: str, needs_index: bool = False) -> Effects:
        if not self._emit:
            return Effects()
        self.stats.item_changes += 1
        if self.broadcast:
            users: set[str] = self.reverse.users_of(item)
            if reason != "item_removal":
                users |= set(self.model.near_users([item]).get(item, ()))
            return Effects(deletions=[_delete(u, reason, [item]) for u in users])
        now = self.clock()
        dirty = self._dirty.get(item)
        if dirty is None:
            self._dirty[item] = DirtyItem(reason, now, now, needs_index=needs_index)
            self.stats.items_changed += 1
        else:
            dirty.last_s, dirty.changes = now, dirty.changes + 1
            dirty.needs_index = dirty.needs_index or needs_index
            dirty.reason = min(dirty.reason, reason, key=REASON_ORDER.index)
        return Effects()


def _delete(user_id: str, reason: str, causes: list[str]) -> RefreshCommand:
    return RefreshCommand(user_id=user_id, reason=reason, cause_ids=causes, mode="delete")


def _refresh(pending: PendingRefresh) -> RefreshCommand:
    return RefreshCommand(
        user_id=pending.user_id,
        reason=pending.reason,
        cause_ids=pending.cause_ids,
        mode="refresh",
    )
