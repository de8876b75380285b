"""The content source on real FAISS snapshots written to a temporary registry (no services)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamrec.candidates.content import ContentSource
from streamrec.infra.settings import Settings
from streamrec.vectors import SnapshotStore, VectorTable

DIM = 16


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings().with_overrides(stack={"state_dir": tmp_path})


@pytest.fixture
def table() -> VectorTable:
    rng = np.random.default_rng(5)
    base = _unit(rng.normal(size=DIM))
    t = VectorTable()
    t.upsert("a", base)
    t.upsert("b", _unit(base + 0.05 * rng.normal(size=DIM)))
    for i in range(20):
        t.upsert(f"far{i}", _unit(rng.normal(size=DIM)))
    return t


def test_without_a_snapshot_nothing_is_searched(settings):
    source = ContentSource(settings)
    assert source.refresh() is False and source.version is None
    assert source.similar([["a"]], 5, [{"a"}], retriever=None) == [[]]


def test_a_new_item_is_found_then_dropped_when_a_snapshot_removes_it(settings, table):
    store, source = SnapshotStore(settings), ContentSource(settings)
    store.publish(table, "m")
    assert source.refresh() is True
    assert source.refresh() is False  # unchanged pointer: nothing loaded
    hits = source.similar([["a"], ["nowhere"]], 3, [{"a"}, set()], retriever=None)
    assert [i for i, _ in hits[0]][:1] == ["b"]  # the nearest, the session item left out
    assert "a" not in dict(hits[0]) and len(hits[0]) == 3
    assert hits[1] == []  # no session item in the index and no retriever to fall back on

    new = table.vector("a") + 0.01 * np.random.default_rng(1).normal(size=DIM)
    table.upsert("new", _unit(new))
    store.publish(table, "m")
    assert source.refresh() is True
    assert source.similar([["a"]], 1, [{"a"}], retriever=None)[0][0][0] == "new"
    table.remove("new")
    store.publish(table, "m")
    source.refresh()
    assert "new" not in dict(source.similar([["a"]], 5, [{"a"}], retriever=None)[0])
