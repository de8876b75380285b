"""A file-based model registry: versioned directories with a manifest, and a promoted pointer.

Layout under `<state dir>/models/<kind>/`:
    <version>/manifest.json   what it is: metrics, feature schema, data window, created at
    <version>/...             the artifacts (weights, index files)
    PROMOTED                  the promoted version's name (replaced atomically)
    HISTORY                   promoted versions, oldest first (rollback pops the last)
    CANARY                    the version in canary, its share of users and since when (JSON;
                              absent when no canary runs)

`kind` is e.g. "ranker", "retriever" or "index". Promotion and rollback return the new
`RegistryChange` so the caller can publish it to registry.changes for the workers listening.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from streamrec.errors import StreamRecError
from streamrec.infra.settings import Settings
from streamrec.topics import RegistryChange
from streamrec.topics.base import utcnow

log = logging.getLogger(__name__)


class RegistryError(StreamRecError):
    """A version is missing, invalid, or there is nothing to roll back to."""


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow")

    kind: str
    version: str
    created_at: datetime = Field(default_factory=utcnow)
    metrics: dict[str, float] = Field(default_factory=dict)
    feature_schema: dict[str, Any] = Field(default_factory=dict)
    data_window: dict[str, Any] = Field(default_factory=dict)
    checksum: str = ""


class CanaryState(BaseModel):
    """A candidate serving a share of the users beside the promoted version (`against`)."""

    version: str
    share: float = Field(gt=0, le=1)
    against: str = Field(description="the promoted version when the canary started")
    started_at: datetime = Field(default_factory=utcnow)
    stage_started_at: datetime = Field(default_factory=utcnow, description="this share since")


class ModelVersion(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: Path
    manifest: Manifest

    @property
    def version(self) -> str:
        return self.manifest.version


def directory_checksum(path: Path) -> str:
    """sha256 over every file but the manifest, in name order."""
    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and p.name != "manifest.json"):
        digest.update(f.relative_to(path).as_posix().encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()


class ModelRegistry:
    """Publishes, lists, promotes and rolls back versions of one state dir's models."""

    def __init__(self, settings: Settings) -> None:
        self.root = settings.state_dir / "models"

    def kind_dir(self, kind: str) -> Path:
        return self.root / kind

    @contextlib.contextmanager
    def training_lock(self) -> Iterator[None]:
        """One training at a time on this registry, across processes. Version ids are
        hashes of the data and config, so two processes training the same thing would both
        publish it: the second waits, then finds the first's versions and reuses them."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".train.lock", "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("another process is training on %s: waiting for it", self.root)
                fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def new_version_dir(self, kind: str, version: str) -> Path:
        """A staging directory; `publish` moves it into place once it is complete."""
        path = self.kind_dir(kind) / f".staging-{version}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def publish(self, kind: str, staging: Path, manifest: Manifest) -> ModelVersion:
        manifest = manifest.model_copy(update={"checksum": directory_checksum(staging)})
        (staging / "manifest.json").write_text(manifest.model_dump_json(indent=2))
        final = self.kind_dir(kind) / manifest.version
        if final.exists():
            raise RegistryError(f"{kind} version {manifest.version} exists already")
        staging.rename(final)
        return ModelVersion(path=final, manifest=manifest)

    def get(self, kind: str, version: str, verify: bool = True) -> ModelVersion:
        path = self.kind_dir(kind) / version
        try:
            manifest = Manifest.model_validate_json((path / "manifest.json").read_text())
        except FileNotFoundError:
            raise RegistryError(f"no {kind} version {version}") from None
        if verify and manifest.checksum and directory_checksum(path) != manifest.checksum:
            raise RegistryError(f"{kind} {version}: checksum mismatch (corrupted files)")
        return ModelVersion(path=path, manifest=manifest)

    def list(self, kind: str) -> list[ModelVersion]:
        d = self.kind_dir(kind)
        if not d.exists():
            return []
        versions = [
            self.get(kind, p.name, verify=False)
            for p in d.iterdir()
            if p.is_dir() and not p.name.startswith(".") and (p / "manifest.json").exists()
        ]
        return sorted(versions, key=lambda v: v.manifest.created_at)

    def promoted(self, kind: str) -> ModelVersion | None:
        pointer = self.kind_dir(kind) / "PROMOTED"
        if not pointer.exists():
            return None
        return self.get(kind, pointer.read_text().strip(), verify=False)

    def promote(self, kind: str, version: str) -> RegistryChange:
        self.get(kind, version)  # exists and is intact
        history = self._history(kind)
        if not history or history[-1] != version:
            history.append(version)
        self._write(kind, history)
        return RegistryChange(kind=kind, name=kind, version=version, action="promote")

    def rollback(self, kind: str) -> RegistryChange:
        history = self._history(kind)
        if len(history) < 2:
            raise RegistryError(f"no earlier promoted {kind} version to roll back to")
        history.pop()
        self._write(kind, history)
        return RegistryChange(kind=kind, name=kind, version=history[-1], action="rollback")

    def canary(self, kind: str) -> CanaryState | None:
        f = self.kind_dir(kind) / "CANARY"
        try:
            return CanaryState.model_validate_json(f.read_text())
        except FileNotFoundError:
            return None

    def set_canary(self, kind: str, version: str, share: float) -> RegistryChange:
        """Start a canary of `version`, or move the running one to `share`."""
        self.get(kind, version)
        promoted = self.promoted(kind)
        if promoted is None or promoted.version == version:
            raise RegistryError(f"a {kind} canary needs a promoted version other than {version}")
        now = utcnow()
        old = self.canary(kind)
        started = old.started_at if old is not None and old.version == version else now
        state = CanaryState(
            version=version,
            share=share,
            against=promoted.version,
            started_at=started,
            stage_started_at=now,
        )
        _atomic_write(self.kind_dir(kind) / "CANARY", state.model_dump_json())
        return RegistryChange(
            kind=kind, name=kind, version=version, action="canary", rollout={"share": share}
        )

    def end_canary(self, kind: str) -> None:
        (self.kind_dir(kind) / "CANARY").unlink(missing_ok=True)

    def annotate(self, kind: str, version: str, fields: dict[str, Any]) -> None:
        """Add fields to a version's manifest (the checksum does not cover the manifest)."""
        mv = self.get(kind, version, verify=False)
        manifest = mv.manifest.model_copy(update=fields)
        _atomic_write(mv.path / "manifest.json", manifest.model_dump_json(indent=2))

    def history(self, kind: str) -> list[str]:
        """The versions promoted so far, oldest first (the last one is promoted now)."""
        return self._history(kind)

    def _history(self, kind: str) -> list[str]:
        f = self.kind_dir(kind) / "HISTORY"
        return f.read_text().split() if f.exists() else []

    def _write(self, kind: str, history: list[str]) -> None:
        d = self.kind_dir(kind)
        _atomic_write(d / "HISTORY", "\n".join(history) + "\n")
        _atomic_write(d / "PROMOTED", history[-1] + "\n")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
