"""Reading the vector index: the newest valid snapshot, swapped in without a restart.

Responsibilities:
- load the promoted snapshot, verifying its checksum, item count and dimension;
- notice a new promoted version cheaply: at most every `reader_poll_s`, one `stat` of the
  registry's PROMOTED pointer (its mtime and inode change when it is replaced); only then
  is the version read and loaded;
- keep serving the snapshot it has when a new one is corrupt or unreadable (it remembers
  the rejected version and does not retry it until the pointer changes again);
- search by vectors or by item id, answering item ids and inner-product scores.

Searches are for the candidates processor and offline jobs; nothing on the request path
searches vectors. One reader is safe to use from several threads: a swap replaces one
reference to an immutable `LoadedSnapshot`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass

import faiss
import numpy as np

from streamrec.infra.settings import Settings
from streamrec.models.registry import ModelVersion, RegistryError
from streamrec.vectors import faiss_index
from streamrec.vectors.errors import NoSnapshot, SnapshotRejected
from streamrec.vectors.snapshots import INDEX_FILE, ITEMS_FILE, SnapshotInfo, SnapshotStore, info

log = logging.getLogger(__name__)

Neighbours = list[tuple[str, float]]


@dataclass(frozen=True)
class LoadedSnapshot:
    info: SnapshotInfo
    index: faiss.Index
    item_ids: list[str]
    ids: np.ndarray
    by_item: dict[str, int]  # item id -> int64 faiss id
    by_id: dict[int, str]

    @property
    def version(self) -> str:
        return self.info.version


def load_snapshot(store: SnapshotStore, version: ModelVersion) -> LoadedSnapshot:
    """Load and verify one snapshot; `SnapshotRejected` if anything does not add up."""
    try:
        verified = store.registry.get(store.kind, version.version, verify=True)
    except RegistryError as exc:
        raise SnapshotRejected(str(exc)) from None
    manifest = verified.manifest.model_dump()
    try:
        index = faiss.read_index(str(verified.path / INDEX_FILE))
        mapping = json.loads((verified.path / ITEMS_FILE).read_text())
    except (RuntimeError, OSError, ValueError) as exc:
        raise SnapshotRejected(f"snapshot {version.version} unreadable: {exc}") from None
    items: list[str] = mapping["item_ids"]
    ids = np.asarray(mapping["ids"], dtype=np.int64)
    count = int(manifest.get("item_count", -1))
    if not (index.ntotal == len(items) == len(ids) == count):
        raise SnapshotRejected(
            f"snapshot {version.version}: {index.ntotal} vectors, {len(items)} items, "
            f"manifest says {count}"
        )
    faiss_index.tune(index, store.cfg)
    return LoadedSnapshot(
        info=info(verified, verified.version),
        index=index,
        item_ids=items,
        ids=ids,
        by_item=dict(zip(items, ids.tolist(), strict=True)),
        by_id=dict(zip(ids.tolist(), items, strict=True)),
    )


class IndexReader:
    """The newest valid snapshot of one state dir's index, refreshed as new ones appear."""

    def __init__(self, settings: Settings, poll_s: float | None = None) -> None:
        self.store = SnapshotStore(settings)
        faiss_index.configure_reader(settings.index)
        self.poll_s = settings.index.reader_poll_s if poll_s is None else poll_s
        self._current: LoadedSnapshot | None = None
        self._pointer_stat: tuple[int, int, int] | None = None
        self._checked_at = float("-inf")
        self._rejected: str | None = None
        self._lock = threading.Lock()
        self.rejections = 0

    # -- snapshot lifecycle ------------------------------------------------------------
    def refresh(self) -> bool:
        """Load the promoted snapshot if it changed; True when a new one was swapped in."""
        with self._lock:
            self._checked_at = time.monotonic()
            try:
                st = self.store.pointer.stat()
            except FileNotFoundError:
                return False
            stat = (st.st_mtime_ns, st.st_ino, st.st_size)
            if stat == self._pointer_stat:
                return False
            self._pointer_stat = stat
            try:
                version = self.store.registry.promoted(self.store.kind)
            except RegistryError as exc:
                log.warning("index pointer names a missing snapshot: %s", exc)
                return False
            if version is None or version.version in (self.version, self._rejected):
                return False
            try:
                loaded = load_snapshot(self.store, version)
            except SnapshotRejected as exc:
                self._rejected = version.version
                self.rejections += 1
                log.error("index snapshot rejected, keeping %s: %s", self.version, exc)
                return False
            self._current = loaded
            self._rejected = None
            return True

    def maybe_refresh(self) -> None:
        if time.monotonic() - self._checked_at >= self.poll_s:
            self.refresh()

    @property
    def version(self) -> str | None:
        return self._current.version if self._current else None

    @property
    def snapshot(self) -> LoadedSnapshot:
        self.maybe_refresh()
        if self._current is None:
            raise NoSnapshot(f"no valid {self.store.kind} snapshot in {self.store.pointer.parent}")
        return self._current

    # -- queries -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.snapshot.item_ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.snapshot.by_item

    def vector(self, item_id: str) -> np.ndarray | None:
        snap = self.snapshot
        fid = snap.by_item.get(item_id)
        return None if fid is None else snap.index.reconstruct(int(fid))

    def search(self, queries: np.ndarray, k: int) -> list[Neighbours]:
        """Top-k (item id, score) per query row, best first."""
        snap = self.snapshot
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if snap.index.ntotal == 0:
            return [[] for _ in range(len(q))]
        scores, labels = snap.index.search(q, min(k, snap.index.ntotal))
        return [
            [(snap.by_id[int(i)], float(s)) for s, i in zip(row_s, row_i, strict=True) if i >= 0]
            for row_s, row_i in zip(scores, labels, strict=True)
        ]

    def similar(self, item_id: str, k: int) -> Neighbours:
        """The k items nearest to `item_id` (itself excluded); [] for an unknown item."""
        vec = self.vector(item_id)
        if vec is None:
            return []
        return [(i, s) for i, s in self.search(vec, k + 1)[0] if i != item_id][:k]
