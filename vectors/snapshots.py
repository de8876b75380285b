"""Versioned index snapshots in the model registry (kind "index").

A snapshot is a registry version directory holding:
    index.faiss     the FAISS `IndexIDMap2` (ids are `vectors.ids.faiss_id` of the item ids)
    items.json      the item ids, and their int64 ids, in the same order
    manifest.json   version, model version, item count, dim, index kind, checksum, build
                    time and seconds, recall@k against exact search, content digest

Responsibilities: build a snapshot in a staging directory, validate it from the files it
wrote (the index reloads, its count and dim match the items, recall on a sample of the
items reaches `min_recall`), and only then publish and promote it: the registry's
PROMOTED pointer is replaced atomically, so a reader sees the old snapshot or the new one,
never half of one. A snapshot that fails is deleted and `SnapshotRejected` raised. Also:
list, roll back (promote an earlier version, which the registry re-verifies), and prune.
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import faiss
import numpy as np
from pydantic import BaseModel, ConfigDict

from streamrec.infra.settings import Settings
from streamrec.models.registry import Manifest, ModelRegistry, ModelVersion, RegistryError
from streamrec.topics import RegistryChange
from streamrec.vectors import faiss_index
from streamrec.vectors.errors import SnapshotRejected
from streamrec.vectors.ids import faiss_id
from streamrec.vectors.table import VectorTable

INDEX_FILE = "index.faiss"
ITEMS_FILE = "items.json"
KIND = "index"


class SnapshotInfo(BaseModel):
    """What `index list` shows of one snapshot."""

    model_config = ConfigDict(frozen=True)

    version: str
    model_version: str
    index_kind: str
    item_count: int
    dim: int
    recall: float
    created_at: datetime
    build_seconds: float
    promoted: bool
    content_digest: str


def info(version: ModelVersion, promoted: str | None = None) -> SnapshotInfo:
    m = version.manifest.model_dump()
    return SnapshotInfo(
        version=version.version,
        model_version=m.get("model_version", ""),
        index_kind=m.get("index_kind", ""),
        item_count=int(m.get("item_count", 0)),
        dim=int(m.get("dim", 0)),
        recall=float(version.manifest.metrics.get("recall_at_k", 0.0)),
        created_at=version.manifest.created_at,
        build_seconds=float(version.manifest.metrics.get("build_s", 0.0)),
        promoted=version.version == promoted,
        content_digest=m.get("content_digest", ""),
    )


def new_version() -> str:
    """Sortable and unique per millisecond (one indexer writes a registry kind)."""
    now = datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}"


class SnapshotStore:
    """Builds, validates, publishes, lists and rolls back index snapshots."""

    def __init__(self, settings: Settings) -> None:
        self.cfg = settings.index
        self.kind = KIND
        self.registry = ModelRegistry(settings)
        faiss_index.configure(self.cfg)

    @property
    def pointer(self) -> Path:
        return self.registry.kind_dir(self.kind) / "PROMOTED"

    def promoted(self) -> ModelVersion | None:
        try:
            return self.registry.promoted(self.kind)
        except RegistryError:
            return None

    def list(self) -> list[SnapshotInfo]:
        current = self.promoted()
        name = current.version if current else None
        return [info(v, name) for v in self.registry.list(self.kind)]

    def publish(self, table: VectorTable, model_version: str) -> SnapshotInfo:
        """Build, validate, publish and promote a snapshot of `table`."""
        started = time.perf_counter()
        version = new_version()
        items = table.item_ids()
        matrix = table.matrix()
        ids = np.fromiter((faiss_id(i) for i in items), dtype=np.int64, count=len(items))
        staging = self.registry.new_version_dir(self.kind, version)
        try:
            index = faiss_index.build(matrix, ids, self.cfg)
            faiss.write_index(index, str(staging / INDEX_FILE))
            (staging / ITEMS_FILE).write_text(json.dumps({"item_ids": items, "ids": ids.tolist()}))
            recall = self._validate(staging, matrix, len(items), table.dim or 0)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        manifest = Manifest(
            kind=self.kind,
            version=version,
            metrics={"recall_at_k": recall, "build_s": time.perf_counter() - started},
            model_version=model_version,
            index_kind=self.cfg.kind,
            item_count=len(items),
            dim=table.dim or 0,
            content_digest=table.digest(),
            validation_k=self.cfg.validation_k,
        )
        published = self.registry.publish(self.kind, staging, manifest)
        self.registry.promote(self.kind, version)  # re-verifies the checksum first
        self.prune()
        return info(published, version)

    def _validate(self, staging: Path, matrix: np.ndarray, count: int, dim: int) -> float:
        """Reload what was written and check it; returns recall@k on a sample."""
        try:
            index = faiss.read_index(str(staging / INDEX_FILE))
        except RuntimeError as exc:
            raise SnapshotRejected(f"index file does not load: {exc}") from None
        if index.ntotal != count:
            raise SnapshotRejected(f"index holds {index.ntotal} vectors, expected {count}")
        if count and index.d != dim:
            raise SnapshotRejected(f"index has {index.d} dims, expected {dim}")
        faiss_index.tune(index, self.cfg)
        rng = np.random.default_rng(0)
        sample = rng.choice(count, size=min(count, self.cfg.validation_queries), replace=False)
        recall = faiss_index.recall_at_k(index, matrix, matrix[sample], self.cfg.validation_k)
        if recall < self.cfg.min_recall:
            raise SnapshotRejected(
                f"recall@{self.cfg.validation_k} {recall:.3f} below {self.cfg.min_recall}"
            )
        return recall

    def rollback(self, version: str | None = None) -> RegistryChange:
        """Promote `version` (re-verified), or the previously promoted one."""
        if version is None:
            return self.registry.rollback(self.kind)
        return self.registry.promote(self.kind, version)

    def prune(self) -> list[str]:
        """Delete all but the newest `keep_snapshots` versions (never the promoted one)."""
        current = self.promoted()
        versions = self.registry.list(self.kind)
        doomed = [
            v
            for v in versions[: max(0, len(versions) - self.cfg.keep_snapshots)]
            if current is None or v.version != current.version
        ]
        for v in doomed:
            shutil.rmtree(v.path, ignore_errors=True)
        return [v.version for v in doomed]
