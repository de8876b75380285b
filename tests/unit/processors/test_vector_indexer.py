"""The indexer's message handling and snapshot timing, without a broker: the table against
real FAISS snapshots, and the consume loop over a scripted reader, an in-memory snapshot
store, registry-change outbox, dead-letter sink and status board, on a hand-moved clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import redis
from confluent_kafka import Message

from streamrec.infra.settings import IndexSettings, Settings
from streamrec.models.registry import Manifest, ModelVersion
from streamrec.processors.vector_indexer import IndexerLoop, VectorIndexer
from streamrec.streams import codecs
from streamrec.streams.errors import TopicReadError
from streamrec.topics import CATALOG_VECTORS, ItemVector, RegistryChange
from streamrec.vectors import (
    IndexReader,
    SnapshotInfo,
    SnapshotRejected,
    SnapshotStore,
    VectorTable,
)
from tests.unit.processors.fakes import Clock, Letters, Offsets, ScriptedReader, Tally

ROWS = np.eye(4, dtype=np.float32)


def _vector(item_id: str, values: np.ndarray, model: str = "m@1") -> bytes:
    event = ItemVector(
        item_id=item_id, model_version=model, content_hash="h", vector=codecs.vector_bytes(values)
    )
    return codecs.encode_vector(event)


def _settings(tmp_path: Path) -> Settings:
    return Settings().with_overrides(
        stack={"state_dir": tmp_path}, index={"snapshot_quiet_s": 0.05, "reader_poll_s": 0}
    )


def _indexer(settings: Settings) -> VectorIndexer:
    return VectorIndexer(settings.index, SnapshotStore(settings))


def test_upserts_tombstones_and_malformed_messages(tmp_path):
    indexer = _indexer(_settings(tmp_path))
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
    indexer = _indexer(settings)
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
    first = _indexer(settings)
    for i in range(8):
        first.apply(f"i{i}".encode(), _vector(f"i{i}", rows[i]))
    assert first.snapshot() is not None
    again = _indexer(settings)  # a restart reading the same topic in another order
    for i in reversed(range(8)):
        again.apply(f"i{i}".encode(), _vector(f"i{i}", rows[i]))
    assert again.snapshot() is None
    again.apply(b"i0", None)
    assert again.snapshot().item_count == 7


class Snapshots:
    """Records what each publish saw of the table; promotes it (its digest) unless told
    to reject it."""

    def __init__(self) -> None:
        self.published: list[tuple[dict[str, list[float]], str]] = []
        self.attempts = 0
        self.reject: str | None = None
        self.digest: str | None = None

    def promoted(self) -> ModelVersion | None:
        if self.digest is None:
            return None
        manifest = Manifest(kind="index", version=f"v{len(self.published)}")
        manifest = manifest.model_copy(update={"content_digest": self.digest})
        return ModelVersion(path=Path("index") / manifest.version, manifest=manifest)

    def publish(self, table: VectorTable, model_version: str) -> SnapshotInfo:
        self.attempts += 1
        if self.reject is not None:
            raise SnapshotRejected(self.reject)
        contents = {i: table.vector(i).tolist() for i in table.item_ids()}
        self.published.append((contents, model_version))
        self.digest = table.digest()
        return SnapshotInfo(
            version=f"v{len(self.published)}",
            model_version=model_version,
            index_kind="flat",
            item_count=len(contents),
            dim=table.dim or 0,
            recall=1.0,
            created_at=datetime(2026, 3, 1, tzinfo=UTC),
            build_seconds=0.01,
            promoted=True,
            content_digest=self.digest,
        )


class Changes:
    def __init__(self) -> None:
        self.sent: list[RegistryChange] = []
        self.polls = 0
        self.flushed: list[float] = []

    def send(self, change: RegistryChange) -> None:
        self.sent.append(change)

    def poll(self) -> None:
        self.polls += 1

    def flush(self, timeout_s: float) -> None:
        self.flushed.append(timeout_s)

    @property
    def promoted(self) -> list[tuple[str, str, str, str]]:
        return [(c.kind, c.name, c.version, c.action) for c in self.sent]


class Status:
    def __init__(self) -> None:
        self.fields: dict[str, str | int] = {"outcome": "published old", "items": 99}
        self.resets = 0
        self.fail = False

    def reset(self) -> None:
        self.resets += 1
        self.fields = {}

    def write(self, fields: Mapping[str, str | int]) -> None:
        if self.fail:
            raise redis.ConnectionError("redis down")
        self.fields.update(fields)


class World:
    def __init__(
        self,
        backlog: Iterable[Message] = (),
        *,
        quiet: float = 1.0,
        interval: float = 30.0,
        snapshots: Snapshots | None = None,
        per_poll: int | None = None,
    ) -> None:
        self.clock = Clock()
        self.snapshots = snapshots or Snapshots()
        cfg = IndexSettings(snapshot_quiet_s=quiet, snapshot_interval_s=interval)
        self.indexer = VectorIndexer(cfg, self.snapshots, clock=self.clock)
        self.reader = ScriptedReader(backlog, per_poll=per_poll)
        self.changes, self.letters, self.status = Changes(), Letters(), Status()
        self.failed = Tally()
        self.loop = IndexerLoop(
            self.indexer,
            self.reader,
            self.changes,
            self.letters,
            self.status,
            failed=self.failed,
        )

    def after(self, seconds: float) -> None:
        """Let `seconds` pass, then run one poll of the loop."""
        self.clock.advance(seconds)
        self.loop.step()

    def contents(self, n: int = -1) -> dict[str, list[float]]:
        return self.snapshots.published[n][0]


def _vectors(o: Offsets, *items: tuple[str, int], partition: int = 0) -> list[Message]:
    return [o.kafka(_vector(i, ROWS[row]), i.encode(), partition) for i, row in items]


def test_the_backlog_is_indexed_then_published_once_quiet_and_announced():
    o = Offsets(CATALOG_VECTORS)
    backlog = [*_vectors(o, ("a", 0), ("a", 2)), *_vectors(o, ("b", 1), partition=3)]
    w = World(backlog, quiet=1.0)
    w.loop.step()
    assert w.indexer.caught_up and w.indexer.table.item_ids() == ["a", "b"]
    assert w.snapshots.attempts == 0  # caught up, but the last change is this instant
    w.after(0.9)
    assert w.snapshots.attempts == 0 and w.changes.sent == []
    w.after(0.1)
    assert w.contents() == {"a": ROWS[2].tolist(), "b": ROWS[1].tolist()}  # latest per item
    assert w.snapshots.published[0][1] == "m@1"
    assert w.changes.promoted == [("index", "index", "v1", "promote")]
    assert w.status.fields == {"outcome": "published v1", "items": 2, "applied": 3, "caught_up": 1}
    w.after(5.0)  # nothing changed since: nothing more
    assert w.snapshots.attempts == 1 and len(w.changes.sent) == 1
    assert w.changes.polls == 4  # deliveries served on every poll


def test_no_snapshot_while_the_startup_backlog_is_still_being_read():
    o = Offsets(CATALOG_VECTORS)
    w = World(_vectors(o, ("a", 0), ("b", 1), ("c", 2)), quiet=1.0, per_poll=1)
    w.loop.step()
    w.after(5.0)
    assert not w.indexer.caught_up and w.snapshots.attempts == 0  # quiet, but 2 of 3 read
    w.after(5.0)
    assert w.indexer.caught_up and w.snapshots.attempts == 0  # "c" just arrived
    w.after(1.0)
    assert sorted(w.contents()) == ["a", "b", "c"]
    assert w.status.fields["caught_up"] == 1


def test_tombstones_remove_items_and_the_next_snapshot_leaves_them_out():
    o = Offsets(CATALOG_VECTORS)
    w = World(_vectors(o, ("a", 0), ("b", 1)), quiet=1.0)
    w.loop.step()
    w.after(1.0)
    assert sorted(w.contents()) == ["a", "b"]
    w.reader.follow(o.kafka(None, b"b"), o.kafka(None, b"zz"))  # zz was never indexed
    w.loop.step()
    assert w.indexer.table.item_ids() == ["a"] and w.indexer.applied == 3
    w.after(1.0)
    assert w.contents() == {"a": ROWS[0].tolist()}
    assert [c.version for c in w.changes.sent] == ["v1", "v2"]
    assert w.status.fields["items"] == 1 and w.letters.got == []


def test_only_tombstones_of_unknown_items_change_nothing():
    o = Offsets(CATALOG_VECTORS)
    w = World(_vectors(o, ("a", 0)), quiet=1.0)
    w.loop.step()
    w.after(1.0)
    w.reader.follow(o.kafka(None, b"zz"))
    w.after(0.1)
    w.after(5.0)
    assert w.snapshots.attempts == 1 and w.indexer.applied == 1


def test_malformed_vectors_are_dead_lettered_with_the_reason_and_skipped():
    o = Offsets(CATALOG_VECTORS)
    backlog = [
        *_vectors(o, ("a", 0)),
        o.kafka(b"garbage", b"c", partition=1),
        o.kafka(_vector("d", ROWS[3]), b"c"),
        o.kafka(_vector("e", np.ones(3, dtype=np.float32)), b"e"),
        o.kafka(_vector("f", ROWS[3]), None, partition=1),
    ]
    w = World(backlog, quiet=1.0)
    w.loop.step()
    reasons = w.letters.reasons
    assert len(reasons) == 4
    assert "bad magic" in reasons[0]
    assert "differs" in reasons[1]
    assert "dims" in reasons[2]
    assert "without a key" in reasons[3]
    assert [(d.source_topic, d.partition, d.offset, d.key) for d in w.letters.got] == [
        ("catalog.vectors", 1, 0, "c"),
        ("catalog.vectors", 0, 1, "c"),
        ("catalog.vectors", 0, 2, "e"),
        ("catalog.vectors", 1, 1, None),
    ]
    assert {d.processor for d in w.letters.got} == {"vector-indexer"}
    assert w.letters.got[0].value == "garbage"
    assert w.failed.value == 4
    w.after(1.0)
    assert w.contents() == {"a": ROWS[0].tolist()} and w.indexer.applied == 1


def test_an_empty_topic_still_gets_an_empty_index_once_quiet():
    w = World(quiet=1.0)
    w.loop.step()
    assert w.indexer.caught_up and w.snapshots.attempts == 0
    w.after(1.0)
    assert w.contents() == {} and w.snapshots.published[0][1] == ""
    assert w.changes.promoted == [("index", "index", "v1", "promote")]


def test_a_steady_stream_is_snapshotted_every_interval():
    o = Offsets(CATALOG_VECTORS)
    w = World(_vectors(o, ("a", 0)), quiet=1.0, interval=3.0)
    w.loop.step()
    published_at: list[int] = []
    for tick in range(1, 14):  # a change every 0.5 s: never quiet
        w.reader.follow(*_vectors(o, (f"i{tick}", tick % 4)))
        before = w.snapshots.attempts
        w.after(0.5)
        if w.snapshots.attempts > before:
            published_at.append(tick)
    assert published_at == [6, 12]  # 3 s after the start, then 3 s after that snapshot
    assert len(w.contents(0)) == 7 and len(w.contents(1)) == 13


def test_an_unchanged_rebuild_publishes_and_announces_nothing():
    o = Offsets(CATALOG_VECTORS)
    first = World(_vectors(o, ("a", 0), ("b", 1)), quiet=1.0)
    first.loop.step()
    first.after(1.0)
    assert first.snapshots.attempts == 1
    o2 = Offsets(CATALOG_VECTORS)  # a restart reading the topic in another order
    again = World(_vectors(o2, ("b", 1), ("a", 0)), quiet=1.0, snapshots=first.snapshots)
    again.loop.step()
    again.after(1.0)
    assert first.snapshots.attempts == 1 and again.changes.sent == []
    assert again.status.fields["outcome"] == "unchanged"
    again.reader.follow(o2.kafka(None, b"a"))
    again.after(0.1)
    again.after(1.0)
    assert again.contents() == {"b": ROWS[1].tolist()}
    assert again.changes.promoted == [("index", "index", "v2", "promote")]


def test_a_rejected_snapshot_is_not_announced_and_is_retried_at_the_next_change():
    o = Offsets(CATALOG_VECTORS)
    w = World(_vectors(o, ("a", 0)), quiet=1.0)
    w.snapshots.reject = "recall@10 0.500 below 0.9"
    w.loop.step()
    w.after(1.0)
    assert w.snapshots.attempts == 1 and w.changes.sent == []
    assert w.status.fields["outcome"] == "rejected: recall@10 0.500 below 0.9"
    w.after(10.0)
    assert w.snapshots.attempts == 1  # no change since: not retried
    w.snapshots.reject = None
    w.reader.follow(*_vectors(o, ("b", 1)))
    w.after(0.1)
    w.after(1.0)
    assert sorted(w.contents()) == ["a", "b"]
    assert w.changes.promoted == [("index", "index", "v1", "promote")]


def test_a_status_board_failure_does_not_stop_the_indexer():
    o = Offsets(CATALOG_VECTORS)
    w = World(_vectors(o, ("a", 0)), quiet=1.0)
    w.status.fail = True
    w.loop.step()
    w.after(1.0)
    assert w.changes.promoted == [("index", "index", "v1", "promote")]


def test_run_starts_a_fresh_status_and_flushes_and_closes_when_stopped():
    w = World()
    stop = threading.Event()
    stop.set()
    w.loop.run(stop)
    assert w.status.resets == 1
    assert w.status.fields == {"outcome": "rebuilding", "items": 0, "applied": 0, "caught_up": 0}
    assert w.reader.polls == 0 and w.changes.flushed == [10] and w.reader.closed


def test_a_broker_failure_ends_run_after_flushing_and_closing():
    o = Offsets(CATALOG_VECTORS)
    w = World(_vectors(o, ("a", 0)))
    w.reader.fail = TopicReadError("cannot read catalog.vectors: broker down")
    with pytest.raises(TopicReadError):
        w.loop.run(threading.Event())
    assert w.reader.polls == 1 and w.changes.flushed == [10] and w.reader.closed
    assert w.snapshots.attempts == 0
