"""Which users a changed item concerns: taste vectors against the current item vectors.

Responsibilities:
- keep the item vectors (from catalog.vectors) in a FAISS inner-product index over unit
  vectors, the processor's view of the current index;
- keep each user's recent positive items and last activity (from events.interactions);
  a user's taste vector is the normalised mean of the content vectors of those items;
- give each user a nearness threshold: the similarity of their `neighbour_rank`-th nearest
  item in the index (recomputed at most every `thresholds_max_age_s` while items arrive);
- `near_users(items)`: for a batch of changed items, one matrix product gives, per item, the
  users whose threshold it reaches, i.e. the users whose top-N content neighbours it enters.

Users without any embedded recent item have no taste vector and are never "near" an item
(they are served trending items; a model promotion still refreshes them).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable

import faiss
import numpy as np

from streamrec.infra.settings import InvalidationSettings
from streamrec.invalidation.errors import InvalidationError


def _unit(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return (v / np.maximum(norm, 1e-12)).astype(np.float32)


class ItemVectors:
    """Item id -> unit vector, with a FAISS flat inner-product index rebuilt when asked."""

    def __init__(self) -> None:
        self.dim: int | None = None
        self._rows: dict[str, np.ndarray] = {}
        self._hash: dict[str, str] = {}
        self._index: faiss.IndexFlatIP | None = None
        self._ids: list[str] = []
        self.version = 0

    def upsert(self, item_id: str, vector: np.ndarray, content_hash: str = "") -> bool:
        """Store an item's vector; False when the same content was stored already."""
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if self.dim is None:
            self.dim = vector.shape[0]
        elif vector.shape[0] != self.dim:
            raise InvalidationError(
                f"item {item_id}: vector of dimension {vector.shape[0]}, the index has {self.dim}"
            )
        if content_hash and self._hash.get(item_id) == content_hash:
            return False
        self._rows[item_id] = _unit(vector)
        self._hash[item_id] = content_hash
        self._index = None
        self.version += 1
        return True

    def remove(self, item_id: str) -> bool:
        if self._rows.pop(item_id, None) is None:
            return False
        self._hash.pop(item_id, None)
        self._index = None
        self.version += 1
        return True

    def get(self, item_id: str) -> np.ndarray | None:
        return self._rows.get(item_id)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def index(self) -> faiss.IndexFlatIP:
        if self._index is None:
            assert self.dim is not None
            self._index = faiss.IndexFlatIP(self.dim)
            self._ids = list(self._rows)
            if self._rows:
                self._index.add(np.stack(list(self._rows.values())))
        return self._index

    def search(self, queries: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """The `k` nearest items (id, inner product) of each query row, best first."""
        index = self.index()
        scores, rows = index.search(np.asarray(queries, dtype=np.float32), min(k, len(self)))
        return [
            [(self._ids[r], float(s)) for r, s in zip(row, score, strict=True) if r >= 0]
            for row, score in zip(rows, scores, strict=True)
        ]


class UserActivity:
    """A user's recent positive items and the time of their last interaction."""

    __slots__ = ("last_seen", "recent")

    def __init__(self, size: int) -> None:
        self.recent: deque[str] = deque(maxlen=size)
        self.last_seen = 0.0


class TasteModel:
    """Users' taste vectors and nearness thresholds over the current item vectors."""

    def __init__(
        self, cfg: InvalidationSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.items = ItemVectors()
        self.users: dict[str, UserActivity] = {}
        self._dirty_users: set[str] = set()
        self._taste_ids: list[str] = []
        self._taste: np.ndarray | None = None
        self._taste_row: dict[str, int] = {}
        self._thresholds: np.ndarray | None = None
        self._thresholds_at = -float("inf")
        self._thresholds_items_version = -1

    # -- inputs -------------------------------------------------------------------------------

    def observe(
        self, user_id: str, item_id: str, ts: float, kind: str = "view", rating: float | None = None
    ) -> None:
        activity = self.users.get(user_id)
        if activity is None:
            activity = self.users[user_id] = UserActivity(self.cfg.recent_items)
        activity.last_seen = max(activity.last_seen, ts)
        positive = kind != "skip" and (rating is None or rating >= self.cfg.min_rating)
        if positive:
            if item_id in activity.recent:
                activity.recent.remove(item_id)
            activity.recent.append(item_id)
            self._dirty_users.add(user_id)

    def items_changed(self, item_ids: Iterable[str]) -> None:
        """Users who hold a changed item in their recent items get their taste recomputed."""
        changed = set(item_ids)
        for user_id, activity in self.users.items():
            if changed.intersection(activity.recent):
                self._dirty_users.add(user_id)

    # -- value --------------------------------------------------------------------------------

    def last_seen(self, user_id: str) -> float:
        activity = self.users.get(user_id)
        return activity.last_seen if activity is not None else 0.0

    def users_by_value(self) -> list[str]:
        """Every known user, the most recently active first."""
        return sorted(self.users, key=lambda u: self.users[u].last_seen, reverse=True)

    # -- taste vectors ------------------------------------------------------------------------

    def _taste_of(self, user_id: str) -> np.ndarray | None:
        vectors = [v for i in self.users[user_id].recent if (v := self.items.get(i)) is not None]
        if not vectors:
            return None
        return _unit(np.mean(vectors, axis=0))

    def taste_matrix(self) -> tuple[list[str], np.ndarray]:
        """(user ids, unit taste vectors) of every user who has one."""
        if self.items.dim is None:
            return [], np.zeros((0, 0), dtype=np.float32)
        if self._taste is None:
            self._dirty_users = set(self.users)
            self._taste_ids, self._taste = [], np.zeros((0, self.items.dim), np.float32)
        if self._dirty_users:
            rows = {u: i for i, u in enumerate(self._taste_ids)}
            keep = np.ones(len(self._taste_ids), dtype=bool)
            new_ids, new_rows = [], []
            for user_id in self._dirty_users:
                taste = self._taste_of(user_id) if user_id in self.users else None
                if user_id in rows:
                    if taste is None:
                        keep[rows[user_id]] = False
                    else:
                        self._taste[rows[user_id]] = taste
                elif taste is not None:
                    new_ids.append(user_id)
                    new_rows.append(taste)
            ids = [u for u, k in zip(self._taste_ids, keep, strict=True) if k] + new_ids
            matrix = self._taste[keep]
            if new_rows:
                matrix = np.vstack([matrix, np.stack(new_rows)])
            self._taste_ids, self._taste = ids, matrix
            self._taste_row = {u: i for i, u in enumerate(ids)}
            self._dirty_users = set()
            self._thresholds = None
        return self._taste_ids, self._taste

    def taste(self, user_id: str) -> np.ndarray | None:
        """The user's unit taste vector, or None when they have none."""
        _, taste = self.taste_matrix()
        row = self._taste_row.get(user_id)
        return None if row is None else taste[row]

    def thresholds(self) -> np.ndarray:
        """Per taste row: similarity of the user's `neighbour_rank`-th nearest item."""
        ids, taste = self.taste_matrix()
        now = self.clock()
        stale = (
            self._thresholds is None
            or len(self._thresholds) != len(ids)
            or (
                self._thresholds_items_version != self.items.version
                and now - self._thresholds_at >= self.cfg.thresholds_max_age_s
            )
        )
        if stale:
            k = min(self.cfg.neighbour_rank, len(self.items))
            if not ids or k == 0:
                self._thresholds = np.full(len(ids), np.inf, dtype=np.float32)
            else:
                distances, _ = self.items.index().search(taste, k)
                self._thresholds = distances[:, k - 1].astype(np.float32)
            self._thresholds_at = now
            self._thresholds_items_version = self.items.version
        assert self._thresholds is not None
        return self._thresholds

    def near_users(self, item_ids: list[str]) -> dict[str, list[str]]:
        """For each item (with a vector): the users whose top-N content neighbours it enters."""
        known = [i for i in item_ids if i in self.items]
        if not known:
            return {}
        ids, taste = self.taste_matrix()
        if not ids:
            return {i: [] for i in known}
        thresholds = self.thresholds()
        vectors = np.stack([self.items.get(i) for i in known])
        scores = taste @ vectors.T  # users x items: one pass for the whole batch
        hit = scores >= thresholds[:, None] - 1e-6
        return {item: [ids[u] for u in np.flatnonzero(hit[:, j])] for j, item in enumerate(known)}
