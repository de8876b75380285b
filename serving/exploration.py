"""Exploration: a few slots of an answer go to the live catalog items shown least.

Responsibilities:
- `ExplorationRotation`: the live catalog (new uploads included, removed items excluded) in
  the order of how often this process has shown each item, fewest first; `take` hands out
  the next items of that order that are not excluded for the request, and `record` counts
  every item of every answer the core makes (explored or ranked), so what the ranker already
  shows drifts to the back at the next `refresh`;
- `Explorer`: which answers explore (`serving.explore_slots`, for the A/B variants in
  `serving.explore_variants`) and how an answer's tail is replaced by explored items.

Why in memory: the request path makes no extra Redis round trip for it (ADR 0126). The
order is rebuilt in the background (`refresh`, every `serving.refresh_s`, the sort on a
thread) from the catalog the worker already follows (`serving.item_catalog`); between
refreshes `take` walks a cursor over it, so a request pays a few dict and set lookups.
Counts are per process: `serving.workers` processes each rotate on their own, and ties are
broken by a per-process shuffle so that they do not all explore the same items first.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

# How far past the cursor `take` may look for eligible items, beyond the slots it fills: the
# request's own exclusions (seen items, items in the answer) are what it skips.
SCAN_SLACK = 64


def least_shown_order(
    live: Iterable[str],
    removed: Collection[str],
    shown: Mapping[str, int],
    tie: Mapping[str, float],
) -> list[str]:
    """The live items not removed, fewest shows first; equal counts in `tie`'s order (items
    missing from `tie`, new since it was drawn, first among their equals)."""
    items = [i for i in live if i not in removed]
    items.sort(key=lambda i: (shown.get(i, 0), tie.get(i, -1.0)))
    return items


class ExplorationRotation:
    """Live items, least shown first, handed out in turn. Not thread-safe: `take`, `record`
    and `install` run on the event loop; only `least_shown_order` runs on a thread."""

    def __init__(self, seed: int | None = None) -> None:
        self.order: list[str] = []
        self.cursor = 0
        self.shown: dict[str, int] = {}
        self._rng = random.Random(seed)
        self._tie: dict[str, float] = {}  # the per-process tie-break of each item

    def __len__(self) -> int:
        return len(self.order)

    def snapshot(self, live: Iterable[str]) -> tuple[list[str], dict[str, int], dict[str, float]]:
        """What a refresh sorts, copied on the loop: the live ids, the counts, the ties (an
        item seen for the first time gets its tie-break here)."""
        ids = list(live)
        for item_id in ids:
            if item_id not in self._tie:
                self._tie[item_id] = self._rng.random()
        return ids, dict(self.shown), dict(self._tie)

    def install(self, order: list[str]) -> None:
        """The new order (from `least_shown_order`), from its start; counts of items no
        longer live are forgotten, so memory follows the catalog."""
        live = set(order)
        self.order, self.cursor = order, 0
        for gone in [i for i in self.shown if i not in live]:
            del self.shown[gone]
        for gone in [i for i in self._tie if i not in live]:
            del self._tie[gone]

    def refresh(self, live: Iterable[str], removed: Collection[str]) -> None:
        """Snapshot, sort and install in one call (tests, small catalogs)."""
        ids, shown, tie = self.snapshot(live)
        self.install(least_shown_order(ids, removed, shown, tie))

    def take(self, n: int, exclude: Collection[str], have: Collection[str]) -> list[str]:
        """Up to `n` items from the cursor on, none in `exclude` (removed, seen) or `have`
        (already in the answer). A taken item is swapped to the cursor and passed, so the
        skipped ones stay at the front for the next request; past the end the walk starts
        again (everything was handed out once more since the last refresh). At most
        `n + SCAN_SLACK` positions are looked at: fewer items rather than a long scan."""
        order = self.order
        size = len(order)
        if n <= 0 or size == 0:
            return []
        taken: list[str] = []
        picked: set[str] = set()
        budget = min(size, n + SCAN_SLACK)
        j = self.cursor
        while len(taken) < n and budget > 0:
            if j >= size:  # wrapped: the skipped items at the end are looked at again later
                j = self.cursor = 0
            item_id = order[j]
            budget -= 1
            if item_id in exclude or item_id in have or item_id in picked:
                j += 1
                continue
            c = self.cursor  # j >= c: swap the taken item to the cursor and pass it
            order[c], order[j] = order[j], order[c]
            self.cursor = c + 1
            j += 1
            taken.append(item_id)
            picked.add(item_id)
        if self.cursor >= size:
            self.cursor = 0
        return taken

    def record(self, item_ids: Iterable[str]) -> None:
        """Count one show of each item (every answer the core makes, explored or ranked)."""
        shown = self.shown
        for item_id in item_ids:
            shown[item_id] = shown.get(item_id, 0) + 1


class Explorer:
    """Which answers explore, and with what: `slots` items of the rotation at the answer's
    tail, for the users whose A/B variant is in `variants` (the experiment's stable
    assignment, `analytics.experiments`)."""

    def __init__(
        self,
        slots: int,
        variants: Collection[str],
        variant_of: Callable[[str], str],
        rotation: ExplorationRotation | None = None,
    ) -> None:
        self.slots = slots
        self.variants = frozenset(variants)
        self.variant_of = variant_of
        self.rotation = rotation if rotation is not None else ExplorationRotation()

    def applies(self, user_id: str) -> bool:
        return self.slots > 0 and self.variant_of(user_id) in self.variants

    def explore(
        self, top: Sequence[tuple[str, float]], k: int, exclude: Collection[str]
    ) -> tuple[list[tuple[str, float]], list[str]]:
        """The answer with its last slots given to explored items (never its first item; a
        short answer's empty slots are filled before ranked items give way), and the
        explored ids. The explored
        items score below every ranked item they follow, so the order stays by score. With
        an empty rotation (catalog not loaded yet) the answer is returned as it was."""
        n = min(self.slots, k - 1)
        if n <= 0:
            return list(top), []
        explored = self.rotation.take(n, exclude, {i for i, _ in top})
        if not explored:
            return list(top), []
        keep = list(top[: k - len(explored)])
        floor = min((s for _, s in keep), default=0.0)
        keep += [(i, floor - 1.0 - j) for j, i in enumerate(explored)]
        return keep, explored


def explore_variants(value: str) -> tuple[str, ...]:
    """`serving.explore_variants`: comma-separated variant names."""
    return tuple(v.strip() for v in value.split(",") if v.strip())


__all__ = [
    "ExplorationRotation",
    "Explorer",
    "explore_variants",
    "least_shown_order",
]
