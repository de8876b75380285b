"""The embedding model in a child process: same vectors as in-process, a dead child is an error."""

from __future__ import annotations

import asyncio
import os
import signal

import numpy as np
import pytest

from infra.settings import Settings
from models.embedder import Embedder, EmbedderError
from models.embedder_process import EmbedderProcess

pytestmark = pytest.mark.integration

TEXTS = [
    "Toy Story (1995). Genres: Animation, Children's, Comedy",
    "Heat (1995). Genres: Action, Crime, Thriller",
    "x",
    "A much longer title that pads its batch: episode 12 of a long series (1998)",
]


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings().with_overrides(embedding={"device": "cpu"})


def test_the_child_returns_the_in_process_vectors(settings):
    with EmbedderProcess(settings) as child:
        remote = child.embed(TEXTS)
        remote_async, seconds = asyncio.run(child.embed_timed(TEXTS))
        info = child.info
    local = Embedder(settings).embed(TEXTS)
    assert info.pid != os.getpid() and info.dim == 384 and info.device == "cpu"
    assert remote.dtype == np.float32 and remote.shape == (4, 384)
    np.testing.assert_allclose(remote, local, atol=1e-6)
    np.testing.assert_allclose(remote_async, local, atol=1e-6)
    assert seconds > 0
    assert child.embed([]).shape == (0, 384)


def test_a_killed_child_fails_the_call_and_every_later_one(settings):
    child = EmbedderProcess(settings)
    try:
        os.kill(child.info.pid, signal.SIGKILL)
        # The pool notices the dead child and fails the call: an error, never a hang.
        with pytest.raises(EmbedderError, match="died"):
            child.embed(TEXTS * 200)
        with pytest.raises(EmbedderError, match="died"):
            asyncio.run(child.embed_timed(TEXTS))
    finally:
        child.close()


def test_a_model_that_cannot_load_is_an_error_from_the_child(settings):
    broken = settings.with_overrides(embedding={"model": "/nonexistent/model-dir"})
    with pytest.raises(EmbedderError, match="cannot load"):
        EmbedderProcess(broken)
