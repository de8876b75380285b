"""The embedding model in child processes: same vectors as in-process, in input order, when
one call is split across N single-threaded children; a dead child is an error, never a hang."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from streamrec.infra.settings import Settings
from streamrec.models.embedder import Embedder, EmbedderError
from streamrec.models.embedder_process import EmbedderProcess, cores

pytestmark = pytest.mark.integration

TEXTS = [
    "Toy Story (1995). Genres: Animation, Children's, Comedy",
    "Heat (1995). Genres: Action, Crime, Thriller",
    "x",
    "A much longer title that pads its batch: episode 12 of a long series (1998)",
]


def catalog_texts(n: int) -> list[str]:
    """Texts of many lengths in no particular order (titles with episodes, ML-100K style)."""
    return [f"{TEXTS[i % len(TEXTS)]}: episode {i}" + " and more" * (i * 7 % 13) for i in range(n)]


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def settings() -> Settings:
    # bf16 fixed: an "auto" probe in each process could choose differently in each.
    return Settings().with_overrides(embedding={"device": "cpu", "cpu_precision": "bf16"})


@pytest.fixture(scope="module")
def children() -> Iterator[EmbedderProcess]:
    """Two single-threaded children in fp32: split calls must match one process exactly
    (bf16 autocast rounds differently on 1 and 2 threads; see the default-settings test)."""
    fp32 = Settings().with_overrides(
        embedding={"device": "cpu", "processes": 2, "cpu_precision": "fp32"}
    )
    with EmbedderProcess(fp32) as pool:
        yield pool


def test_the_child_returns_the_in_process_vectors(settings):
    one = settings.with_overrides(embedding={"processes": 1})  # one child, torch's threads
    with EmbedderProcess(one) as child:
        remote = child.embed(TEXTS)
        remote_async, seconds = asyncio.run(child.embed_timed(TEXTS))
        info = child.info
    # bf16 rounds by thread count, and earlier tests may have set this process's count.
    with torch_threads(info.torch_threads):
        local = Embedder(settings).embed(TEXTS)
    assert info.pid != os.getpid() and info.dim == 384 and info.device == "cpu"
    assert info.processes == 1 and info.pids == [info.pid]
    assert remote.dtype == np.float32 and remote.shape == (4, 384)
    np.testing.assert_allclose(remote, local, atol=1e-6)
    np.testing.assert_allclose(remote_async, local, atol=1e-6)
    assert seconds > 0
    assert child.embed([]).shape == (0, 384)


def test_split_calls_return_one_process_vectors_in_input_order(children):
    info = children.info
    assert info.processes == 2 and len(set(info.pids)) == 2 and os.getpid() not in info.pids
    assert info.torch_threads == 1 and all(c.torch_threads == 1 for c in children.children)
    texts = catalog_texts(300)  # several batches per child, lengths shuffled
    fp32 = Settings().with_overrides(embedding={"device": "cpu", "cpu_precision": "fp32"})
    local = Embedder(fp32).embed(texts)
    split_rows = children.embed(texts)
    timed_rows, seconds = asyncio.run(children.embed_timed(texts))
    assert split_rows.dtype == np.float32 and split_rows.shape == (300, 384)
    np.testing.assert_allclose(split_rows, local, atol=1e-5)
    np.testing.assert_allclose(timed_rows, local, atol=1e-5)
    assert seconds > 0
    # Calls smaller than a batch per child, and smaller than the number of children.
    np.testing.assert_allclose(children.embed(texts[:5]), local[:5], atol=1e-5)
    np.testing.assert_allclose(children.embed(texts[7:8]), local[7:8], atol=1e-5)
    assert children.embed([]).shape == (0, 384)
    empty, empty_s = asyncio.run(children.embed_timed([]))
    assert empty.shape == (0, 384) and empty_s == 0.0


def test_default_settings_one_single_threaded_child_per_core_close_to_in_process(settings):
    # The default (processes=0) on this CPU: one child per core, one torch thread each; in
    # bf16 autocast its rows differ from the multi-threaded in-process ones by rounding only.
    texts = catalog_texts(48)  # bf16 autocast is slow on a CPU without native bf16
    with EmbedderProcess(settings) as pool:
        info = pool.info
        rows = pool.embed(texts)
    assert info.processes == cores() and len(info.pids) == cores()
    if cores() > 1:
        assert info.torch_threads == 1
    local = Embedder(settings).embed(texts)
    assert np.abs(rows - local).max() < 5e-3
    assert np.sum(rows * local, axis=1).min() > 0.9999


def test_auto_precision_probes_once_and_sets_one_precision_in_every_child():
    # Batches of 16: the children's probe rounds are 4x shorter than at the default 64.
    auto = Settings().with_overrides(
        embedding={"device": "cpu", "cpu_precision": "auto", "batch_size": 16}
    )
    texts = catalog_texts(100)
    with EmbedderProcess(auto) as pool:
        info, rows = pool.info, pool.embed(texts)
    probe = info.probe
    assert probe is not None and probe.fp32_items_per_s > 0 and probe.bf16_items_per_s > 0
    assert info.precision == probe.choice() in ("fp32", "bf16")
    assert {c.precision for c in pool.children} == {info.precision}
    chosen = auto.with_overrides(embedding={"cpu_precision": info.precision})
    local = Embedder(chosen).embed(texts)
    assert np.sum(rows * local, axis=1).min() > 0.9999


def test_a_killed_child_fails_the_call_and_every_later_one(settings):
    pair = settings.with_overrides(embedding={"processes": 2})
    child = EmbedderProcess(pair)
    try:
        os.kill(child.info.pids[1], signal.SIGKILL)  # one of the two: the other still answers
        # The pool notices the dead child and fails the call: an error, never a hang.
        with pytest.raises(EmbedderError, match="died"):
            child.embed(TEXTS * 200)
        with pytest.raises(EmbedderError, match="died"):
            asyncio.run(child.embed_timed(TEXTS))
        with pytest.raises(EmbedderError, match="died"):
            child.embed(TEXTS[:1])  # even a call the live child alone could have taken
    finally:
        child.close()


def test_a_child_killed_during_a_call_fails_that_call(settings):
    pair = settings.with_overrides(embedding={"processes": 2})
    child = EmbedderProcess(pair)
    try:

        async def call_and_kill() -> None:
            pending = asyncio.ensure_future(child.embed_timed(catalog_texts(2000)))
            await asyncio.sleep(0.5)  # both children are working on their shares
            os.kill(child.info.pids[0], signal.SIGKILL)
            await asyncio.wait_for(pending, 120)

        with pytest.raises(EmbedderError, match="died"):
            asyncio.run(call_and_kill())
    finally:
        child.close()


def test_a_model_that_cannot_load_is_an_error_from_the_child(settings):
    broken = settings.with_overrides(embedding={"model": "/nonexistent/model-dir"})
    with pytest.raises(EmbedderError, match="cannot load"):
        EmbedderProcess(broken)
