"""How one embedding call is split across the model's processes (no model loaded here)."""

from __future__ import annotations

import random

import pytest

from streamrec.infra.settings import Settings
from streamrec.models.embedder_process import cores, cpu_processes, split


def texts_of(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["w" * rng.randint(5, 160) for _ in range(n)]


def cost(texts: list[str], shard: list[int], batch: int) -> int:
    """Tokens the model pads to in a shard: texts x longest, per batch it cuts."""
    ordered = sorted(shard, key=lambda i: -len(texts[i]))
    return sum(
        len(ordered[s : s + batch]) * len(texts[ordered[s]]) for s in range(0, len(ordered), batch)
    )


def batches(texts: list[str], indices: list[int], batch: int) -> list[frozenset[int]]:
    """The batches sentence-transformers cuts a call into: longest first, `batch` at a time."""
    ordered = sorted(indices, key=lambda i: -len(texts[i]))
    return [frozenset(ordered[s : s + batch]) for s in range(0, len(ordered), batch)]


@pytest.mark.parametrize("n, shards", [(1, 2), (3, 2), (100, 2), (256, 2), (300, 3), (1000, 4)])
def test_every_text_is_in_exactly_one_non_empty_shard(n, shards):
    texts = texts_of(n)
    out = split(texts, 64, shards)
    assert 1 <= len(out) <= min(n, shards)
    assert all(out)
    assert sorted(i for shard in out for i in shard) == list(range(n))


def test_no_texts_no_shards():
    assert split([], 64, 2) == []


def test_a_single_shard_is_the_whole_call():
    texts = texts_of(50)
    assert sorted(split(texts, 64, 1)[0]) == list(range(50))


def test_shards_hold_the_batches_one_call_would_make():
    # Lengths all distinct: the length order (and so the batches) is unambiguous.
    texts = ["w" * (1 + i) for i in range(256)]
    random.Random(1).shuffle(texts)
    shards = split(texts, 64, 2)
    assert [len(s) for s in shards] == [128, 128]
    whole = set(batches(texts, list(range(256)), 64))
    per_shard = [b for shard in shards for b in batches(texts, shard, 64)]
    assert set(per_shard) == whole and len(per_shard) == len(whole)
    # Same padding as one call: the model does no more work split than whole.
    assert sum(cost(texts, s, 64) for s in shards) == cost(texts, list(range(256)), 64)


def test_work_is_balanced_across_shards():
    texts = texts_of(256 * 8, seed=3)
    for shards in (2, 3, 4):
        costs = [cost(texts, s, 64) for s in split(texts, 64, shards)]
        assert len(costs) == shards
        assert max(costs) / min(costs) < 1.15, costs


def test_a_call_under_one_batch_per_shard_still_uses_every_shard():
    texts = texts_of(100)
    shards = split(texts, 64, 2)
    assert [len(s) for s in shards] == [50, 50]
    # One run of similar lengths each: the longest 50 in one shard, the rest in the other.
    assert min(len(texts[i]) for i in shards[0]) >= max(len(texts[i]) for i in shards[1])


def test_processes_default_to_one_per_core():
    assert cpu_processes(Settings().with_overrides(embedding={"processes": 0})) == cores() >= 1
    assert cpu_processes(Settings().with_overrides(embedding={"processes": 3})) == 3
