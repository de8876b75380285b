"""The indexer's message handling and snapshot timing, without a broker (real FAISS)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from streamrec.infra.settings import Settings
from streamrec.processors.vector_indexer import VectorIndexer
from streamrec.streams import codecs
from streamrec.topics import ItemVector
from streamrec.vectors import IndexReader


def _vector(item_id: str, values: np.ndarray, model: str = "m@1") -> bytes:
    event = ItemVector(
        item_id=item_id, model_version=model, content_hash="h", vector=codecs.vector_bytes(values)
    )
    return codecs.encode_vector(event)


def _settings(tmp_path: Path) -> Settings:
    return Settings().with_overrides(
        stack={"state_dir": tmp_path}, index={"snapshot_quiet_s": 0.05, "reader_poll_s": 0}
    )


def test_upserts_tombstones_and_malformed_messages(tmp_path):
    indexer = VectorIndexer(_settings(tmp_path))
    v = np.eye(4, dtype=np.float32)
    assert indexer.apply(b"a", _vector("a", v[0])) is None
    assert indexer.apply(b"b", _vector("b", v[1])) is None
    assert indexer.apply(b"a", _vector("a", v[2])) is None  # update
    assert indexer.apply(b"b", None) is None  # tombstone
    assert indexer.apply(b"zz", None) is None  # tombstone of an unknown item: nothing
    assert "bad magic" in indexer.apply(b"c", b"garbage")
    assert "differs" in indexer.apply(b"c", _vector("d", v[3]))
    assert "dims" in indexer.apply(b"e", _vector("e", np.ones(3, dtype=np.float32)))
    assert "without a key" in indexer.apply(None, _vector("f", v[3]))
    assert indexer.table.item_ids() == ["a"]
    np.testing.assert_array_equal(indexer.table.vector("a"), v[2])


def test_no_snapshot_before_catching_up_then_after_a_quiet_spell(tmp_path):
    settings = _settings(tmp_path)
    indexer = VectorIndexer(settings)
    indexer.apply(b"a", _vector("a", np.eye(4, dtype=np.float32)[0]))
    now = time.monotonic() + 10
    assert not indexer.due(now)  # still reading the startup backlog
    indexer.caught_up = True
    assert not indexer.due(indexer.last_change)  # not quiet yet
    assert indexer.due(now)
    published = indexer.snapshot()
    assert published is not None and published.item_count == 1
    assert published.model_version == "m@1"
    assert len(IndexReader(settings)) == 1


def test_an_unchanged_rebuild_publishes_nothing(tmp_path):
    settings = _settings(tmp_path)
    rows = np.eye(8, dtype=np.float32)
    first = VectorIndexer(settings)
    for i in range(8):
        first.apply(f"i{i}".encode(), _vector(f"i{i}", rows[i]))
    assert first.snapshot() is not None
    again = VectorIndexer(settings)  # a restart reading the same topic in another order
    for i in reversed(range(8)):
        again.apply(f"i{i}".encode(), _vector(f"i{i}", rows[i]))
    assert again.snapshot() is None
    again.apply(b"i0", None)
    assert again.snapshot().item_count == 7
