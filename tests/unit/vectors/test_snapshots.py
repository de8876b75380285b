"""Snapshots with real FAISS: validation before publishing, readers, corruption, rollback."""

from __future__ import annotations

import numpy as np
import pytest

from streamrec.vectors import IndexReader, NoSnapshot, SnapshotRejected, SnapshotStore
from streamrec.vectors.snapshots import INDEX_FILE
from tests.unit.vectors.conftest import table_of, unit_rows


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_published_snapshot_answers_like_exact_search(index_settings, kind):
    settings = index_settings.with_overrides(index={"kind": kind, "reader_poll_s": 0})
    rows = unit_rows(2000)
    published = SnapshotStore(settings).publish(table_of(rows), "m@1")
    assert published.item_count == 2000 and published.promoted and published.dim == 32
    assert published.recall >= settings.index.min_recall
    reader = IndexReader(settings)
    hits = reader.search(rows[:20], 10)
    exact = np.argsort(-(rows[:20] @ rows.T), axis=1)[:, :10]
    found = np.mean(
        [
            len({f"i{j}" for j in e} & {i for i, _ in h}) / 10
            for e, h in zip(exact, hits, strict=True)
        ]
    )
    assert found >= 0.9 if kind != "flat" else found == 1.0
    np.testing.assert_allclose(reader.vector("i5"), rows[5], atol=1e-6)
    assert all(item != "i5" for item, _ in reader.similar("i5", 5))


def test_a_snapshot_failing_the_recall_check_is_never_published(index_settings):
    # A deliberately starved HNSW cannot reach recall 0.99 on 2,000 clustered vectors.
    settings = index_settings.with_overrides(
        index={
            "kind": "hnsw",
            "hnsw_m": 2,
            "hnsw_ef_construction": 2,
            "hnsw_ef_search": 1,
            "min_recall": 0.99,
            "validation_k": 50,
        }
    )
    store = SnapshotStore(settings)
    with pytest.raises(SnapshotRejected, match="recall"):
        store.publish(table_of(unit_rows(2000, clusters=64)), "m@1")
    assert store.list() == [] and store.promoted() is None
    assert not any(
        p.name.startswith(".staging") for p in store.registry.kind_dir("index").iterdir()
    )
    with pytest.raises(NoSnapshot):
        _ = IndexReader(settings).snapshot


def test_reader_picks_up_a_new_snapshot_without_restarting(index_settings):
    store = SnapshotStore(index_settings)
    rows = unit_rows(300)
    first = store.publish(table_of(rows[:200]), "m@1")
    reader = IndexReader(index_settings)
    assert reader.snapshot.version == first.version and len(reader) == 200
    second = store.publish(table_of(rows), "m@1")
    assert len(reader) == 300 and reader.version == second.version
    assert "i250" in reader


def test_a_corrupted_snapshot_is_rejected_and_readers_keep_the_previous(index_settings):
    store = SnapshotStore(index_settings)
    rows = unit_rows(300)
    good = store.publish(table_of(rows[:200]), "m@1")
    reader = IndexReader(index_settings)
    assert reader.snapshot.version == good.version
    bad = store.publish(table_of(rows), "m@1")
    index_file = store.registry.kind_dir("index") / bad.version / INDEX_FILE
    data = bytearray(index_file.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the vectors
    index_file.write_bytes(bytes(data))
    assert not reader.refresh()
    assert reader.version == good.version and len(reader) == 200
    assert reader.rejections == 1
    # a fresh reader also refuses it (there is nothing else promoted to fall back on)
    with pytest.raises(NoSnapshot):
        _ = IndexReader(index_settings).snapshot
    # rolling back to the good version is verified and readers follow
    store.rollback(good.version)
    assert IndexReader(index_settings).snapshot.version == good.version
    reader.refresh()
    assert reader.version == good.version
    with pytest.raises(Exception, match="checksum"):
        store.rollback(bad.version)


def test_rollback_to_the_previous_version_and_pruning(index_settings):
    settings = index_settings.with_overrides(index={"keep_snapshots": 2, "reader_poll_s": 0})
    store = SnapshotStore(settings)
    rows = unit_rows(100)
    versions = [store.publish(table_of(rows[: 50 + 10 * i]), "m@1").version for i in range(4)]
    assert [s.version for s in store.list()] == versions[-2:]
    reader = IndexReader(settings)
    assert len(reader) == 80
    change = store.rollback()
    assert change.version == versions[-2] and change.action == "rollback"
    assert len(reader) == 70
