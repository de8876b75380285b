"""The indexer's working set: the latest vector of every live item, in one growable matrix.

Responsibilities: upsert and remove by item id (removal moves the last row into the hole, so
the matrix stays dense), keep the int64 id of each row, and give a digest of the content
(item ids and vector bytes, order-free) so two builds can be compared cheaply.
"""

from __future__ import annotations

import hashlib

import numpy as np

from streamrec.vectors.errors import VectorIndexError
from streamrec.vectors.ids import faiss_id


class VectorTable:
    """item id -> unit vector, stored densely; not thread-safe (one indexer owns it)."""

    def __init__(self, dim: int | None = None, capacity: int = 1024) -> None:
        self.dim = dim
        self._rows: dict[str, int] = {}
        self._items: list[str] = []
        self._by_fid: dict[int, str] = {}
        self._matrix = np.zeros((capacity, dim or 0), dtype=np.float32)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._rows

    def upsert(self, item_id: str, vector: np.ndarray) -> None:
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if self.dim is None:
            self.dim = vector.shape[0]
            self._matrix = np.zeros((self._matrix.shape[0], self.dim), dtype=np.float32)
        if vector.shape[0] != self.dim:
            raise VectorIndexError(
                f"item {item_id!r}: vector of {vector.shape[0]} dims, the index has {self.dim}"
            )
        row = self._rows.get(item_id)
        if row is None:
            fid = faiss_id(item_id)
            other = self._by_fid.get(fid)
            if other is not None and other != item_id:
                raise VectorIndexError(f"item ids {other!r} and {item_id!r} hash to one id")
            row = len(self._items)
            if row == self._matrix.shape[0]:
                grown = np.zeros((max(1024, row * 2), self.dim), dtype=np.float32)
                grown[:row] = self._matrix[:row]
                self._matrix = grown
            self._rows[item_id] = row
            self._items.append(item_id)
            self._by_fid[fid] = item_id
        self._matrix[row] = vector

    def remove(self, item_id: str) -> bool:
        row = self._rows.pop(item_id, None)
        if row is None:
            return False
        self._by_fid.pop(faiss_id(item_id), None)
        last = len(self._items) - 1
        if row != last:
            moved = self._items[last]
            self._items[row] = moved
            self._matrix[row] = self._matrix[last]
            self._rows[moved] = row
        self._items.pop()
        return True

    def item_ids(self) -> list[str]:
        return list(self._items)

    def matrix(self) -> np.ndarray:
        """A copy of the live rows, aligned with `item_ids()`."""
        return self._matrix[: len(self._items)].copy()

    def vector(self, item_id: str) -> np.ndarray | None:
        row = self._rows.get(item_id)
        return None if row is None else self._matrix[row].copy()

    def digest(self) -> str:
        """sha256 over (item id, vector bytes) in item-id order: equal content, equal digest."""
        h = hashlib.sha256()
        for item_id in sorted(self._rows):
            h.update(item_id.encode() + b"\x00")
            h.update(self._matrix[self._rows[item_id]].tobytes())
        return h.hexdigest()
