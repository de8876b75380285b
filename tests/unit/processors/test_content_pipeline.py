"""The content pipeline's buffer path with an in-memory model, store and vector sink: what
is embedded, produced, recorded, dead-lettered and acked, and in which order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from streamrec.models.embedder_process import EmbedderInfo
from streamrec.processors.content_pipeline import ContentPipeline
from streamrec.streams import codecs
from streamrec.streams.errors import DeliveryError
from streamrec.topics import CATALOG_ITEMS, CATALOG_VECTORS, CatalogItem, ItemVector
from tests.unit.processors.fakes import AsyncLetters, FakeEvent, Offsets

DIM = 4


class Model:
    model_version = "fake-v1"

    def __init__(self) -> None:
        self.info = EmbedderInfo(
            model_version=self.model_version,
            device="cpu",
            dim=DIM,
            batch_size=64,
            torch_threads=1,
            pids=[1],
        )
        self.calls: list[list[str]] = []
        self.closed = False

    async def embed_timed(self, texts: list[str]) -> tuple[np.ndarray, float]:
        self.calls.append(list(texts))
        rows = np.array([[len(t), 1.0, 0.0, float(i)] for i, t in enumerate(texts)], np.float32)
        return rows.reshape(len(texts), DIM), 0.25

    def close(self) -> None:
        self.closed = True


class Store:
    def __init__(self, log: list[str]) -> None:
        self.hashes: dict[str, str] = {}
        self.removed_set: set[str] = set()
        self.stats: dict[str, float] = {}
        self.model: EmbedderInfo | None = None
        self.log = log

    async def stored_hashes(self, item_ids: list[str]) -> list[str | None]:
        return [self.hashes.get(i) for i in item_ids]

    async def removed(self, item_ids: list[str]) -> None:
        self.log.append(f"removed {','.join(item_ids)}")
        self.removed_set.update(item_ids)
        for i in item_ids:
            self.hashes.pop(i, None)

    async def published(self, hashes: Mapping[str, str], embed_s: float) -> None:
        self.log.append(f"hashes {','.join(hashes)}")
        self.hashes.update(hashes)
        self.removed_set.difference_update(hashes)
        self._add({"embedded": len(hashes), "embed_calls": 1, "embed_s": embed_s})

    async def record_model(self, info: EmbedderInfo) -> None:
        self.model = info

    async def record_buffer(self, counts: Mapping[str, int], seconds: float) -> None:
        self.log.append("counts")
        self._add(counts)

    def _add(self, counts: Mapping[str, float]) -> None:
        for k, v in counts.items():
            self.stats[k] = self.stats.get(k, 0) + v


class Vectors:
    def __init__(self, log: list[str], fail: bool = False) -> None:
        self.sent: list[tuple[bytes, bytes | None]] = []
        self.log = log
        self.fail = fail

    async def send(self, messages: Sequence[tuple[bytes, bytes | None]]) -> None:
        if self.fail:
            raise DeliveryError("1 messages not delivered: broker down")
        self.log.append(f"vectors {len(messages)}")
        self.sent.extend(messages)


class World:
    def __init__(self, fail: bool = False) -> None:
        self.log: list[str] = []
        self.model = Model()
        self.store = Store(self.log)
        self.vectors = Vectors(self.log, fail)
        self.letters = AsyncLetters()
        self.pipeline = ContentPipeline(self.store, self.vectors, self.letters, lambda: self.model)
        self.offsets = Offsets(CATALOG_ITEMS)

    def item(self, item_id: str, **kw: object) -> FakeEvent:
        return self.offsets.event(CatalogItem(item_id=item_id, **kw))  # type: ignore[arg-type]

    async def run(self, buffer: list[FakeEvent]) -> None:
        work, todo, embedding = await self.pipeline.prepare(buffer)
        await self.pipeline.finish(buffer, work, todo, embedding, started=0.0)

    def published(self) -> list[ItemVector]:
        out = []
        for key, value in self.vectors.sent:
            if value is not None:
                vector = codecs.decode(CATALOG_VECTORS, value)
                assert isinstance(vector, ItemVector) and key == vector.item_id.encode()
                out.append(vector)
        return out


async def test_a_buffer_embeds_its_items_in_one_call_most_popular_first_then_acks():
    w = World()
    await w.pipeline.load_model()
    assert w.store.model is not None and w.store.model.model_version == "fake-v1"
    buffer = [
        w.item("tail", title="Tail", popularity_hint=0.1),
        w.item("hit", title="Hit", genres=["Drama"], popularity_hint=9.0),
    ]
    await w.run(buffer)
    assert len(w.model.calls) == 1 and len(w.model.calls[0]) == 2
    vectors = w.published()
    assert [v.item_id for v in vectors] == ["hit", "tail"]
    assert {v.model_version for v in vectors} == {"fake-v1"}
    assert w.store.hashes == {v.item_id: v.content_hash for v in vectors}
    assert w.log == ["vectors 2", "hashes hit,tail", "counts"]
    assert [e.acks for e in buffer] == [1, 1]
    assert w.store.stats["seen"] == 2 and w.store.stats["embedded"] == 2
    assert len(w.pipeline.in_flight) == 0


async def test_an_unchanged_item_is_skipped_and_a_changed_one_embedded_again():
    w = World()
    await w.pipeline.load_model()
    await w.run([w.item("a", title="Alpha"), w.item("b", title="Beta")])
    sent = len(w.vectors.sent)
    await w.run([w.item("a", title="Alpha"), w.item("b", title="Beta, recut")])
    assert [v.item_id for v in w.published()[sent:]] == ["b"]
    assert len(w.model.calls[-1]) == 1 and "recut" in w.model.calls[-1][0]
    assert w.store.stats["skipped"] == 1 and w.store.stats["embed_calls"] == 2


async def test_a_removal_sends_a_tombstone_and_marks_the_item_before_the_vectors():
    w = World()
    await w.pipeline.load_model()
    await w.run([w.item("x", title="X")])
    w.log.clear()
    await w.run([w.item("x", op="remove"), w.item("y", title="Y")])
    assert (b"x", None) in w.vectors.sent
    assert w.store.removed_set == {"x"} and "x" not in w.store.hashes
    assert w.log == ["vectors 1", "removed x", "vectors 1", "hashes y", "counts"]
    assert w.store.stats["removed"] == 1


async def test_bad_input_is_dead_lettered_and_the_rest_of_the_buffer_published():
    w = World()
    await w.pipeline.load_model()
    buffer = [
        w.offsets.raw(b"not json", partition=1),
        w.item("empty", title=""),
        w.item("ok", title="Fine"),
    ]
    await w.run(buffer)
    assert [(letter.partition, letter.offset) for letter in w.letters.got] == [(1, 0), (0, 0)]
    assert "nothing to embed" in w.letters.reasons[1]
    assert {letter.processor for letter in w.letters.got} == {"content-pipeline"}
    assert [v.item_id for v in w.published()] == ["ok"]
    assert w.store.stats["dead"] == 2 and w.store.stats["seen"] == 3
    assert [e.acks for e in buffer] == [1, 1, 1]  # dead letters are sent before the acks


async def test_a_failed_delivery_acks_nothing_records_no_hash_and_settles_the_buffer():
    w = World(fail=True)
    await w.pipeline.load_model()
    buffer = [w.item("a", title="Alpha")]
    with pytest.raises(DeliveryError):
        await w.run(buffer)
    assert buffer[0].acks == 0 and w.store.hashes == {} and "counts" not in w.log
    assert len(w.pipeline.in_flight) == 0  # the redo compares with the store again
    w.vectors.fail = False
    await w.run(buffer)
    assert [v.item_id for v in w.published()] == ["a"] and buffer[0].acks == 1


async def test_the_next_buffer_compares_with_the_one_still_in_flight():
    w = World()
    await w.pipeline.load_model()
    await w.run([w.item("a", title="Old")])
    first = [w.item("a", title="New")]
    work1, todo1, emb1 = await w.pipeline.prepare(first)
    # Planned while the first is unpublished: back to the stored text, still a change.
    second = [w.item("a", title="Old")]
    work2, todo2, emb2 = await w.pipeline.prepare(second)
    assert [i.item_id for i, _, _ in todo2] == ["a"]
    await w.pipeline.finish(first, work1, todo1, emb1, 0.0)
    await w.pipeline.finish(second, work2, todo2, emb2, 0.0)
    titles = [call[0] for call in w.model.calls]
    assert "Old" in titles[-1] and "New" in titles[-2]
    assert w.store.hashes["a"] == w.published()[-1].content_hash


async def test_the_model_is_loaded_once_and_closed_on_demand():
    w = World()
    first = await w.pipeline.load_model()
    assert await w.pipeline.load_model() is first
    w.pipeline.close_model()
    assert w.model.closed and w.pipeline.embedder is None
