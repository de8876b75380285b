"""The embedding model in a child process of its own: texts in, float32 vectors out.

Responsibilities:
- start one child process (`spawn`: never a fork of a process that runs an event loop, a
  Kafka client and torch), load `models.embedder.Embedder` there once and warm it up;
- embed texts in the child (`embed`, or `embed_async` from an event loop) and return the
  same L2-normalised float32 rows as an in-process `Embedder`;
- surface a failure of the child as `EmbedderError`: a model error is re-raised with the
  child's message; a child that died (killed, out of memory) fails the pending and every
  later call at once instead of hanging (`concurrent.futures.ProcessPoolExecutor` marks
  its pool broken);
- stop the child (`close`).

Why a process and not a thread (ADR 0080): torch releases the GIL in every op and must take
it back after; next to a Python thread that holds it (the Faust/aiokafka event loop of a
worker) each take-back can wait up to `sys.getswitchinterval()`, and a forward pass has
hundreds of ops. The child has its own GIL, so the worker's event loop cannot slow the
model down, whatever it is doing.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np
from pydantic import BaseModel

from infra.settings import Settings
from models.embedder import Embedder, EmbedderError

# The child's one model; set by `_load`, the first task the child runs.
_model: Embedder | None = None


class EmbedderInfo(BaseModel):
    """What the parent learns about the model loaded in the child."""

    model_version: str
    device: str
    dim: int
    batch_size: int
    torch_threads: int
    pid: int


def _load(settings: Settings, device: str | None) -> EmbedderInfo:
    """In the child: load the model once and pay the first calls' kernel set-up."""
    import torch

    global _model
    _model = Embedder(settings, device=device)
    # Texts of a few lengths, one batch: the first buffer of a backlog does not pay for it.
    _model.embed([" ".join(["warm-up"] * (1 + i % 24)) for i in range(_model.batch_size)])
    return EmbedderInfo(
        model_version=_model.model_version,
        device=_model.device,
        dim=_model.dim,
        batch_size=_model.batch_size,
        torch_threads=torch.get_num_threads(),
        pid=os.getpid(),
    )


def _embed(texts: list[str]) -> tuple[np.ndarray, float]:
    """In the child: the vectors and the seconds the model took (queueing left out)."""
    if _model is None:  # pragma: no cover - _load always runs first in the one child
        raise EmbedderError("the embedding process has no model loaded")
    started = time.perf_counter()
    vectors = _model.embed(texts)
    return vectors, time.perf_counter() - started


class EmbedderProcess:
    """One child process holding one `Embedder`; `embed` has the same contract."""

    def __init__(self, settings: Settings, device: str | None = None) -> None:
        # One worker: every call runs in the same child, on the model loaded by `_load`.
        self._pool = ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn")
        )
        self.info = self._result(self._pool.submit(_load, settings, device))
        self.model_version = self.info.model_version
        self.device = self.info.device
        self.dim = self.info.dim
        self.batch_size = self.info.batch_size

    @staticmethod
    def _result(future: Future[object]) -> object:
        try:
            return future.result()
        except BrokenProcessPool as exc:
            raise EmbedderError(f"the embedding process died: {exc}") from exc

    def _submit(self, texts: list[str]) -> Future[tuple[np.ndarray, float]]:
        try:
            return self._pool.submit(_embed, texts)
        except BrokenProcessPool as exc:  # raised at submit once the pool is known broken
            raise EmbedderError(f"the embedding process died: {exc}") from exc

    def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32, each row L2-normalised; empty input gives (0, dim)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors, _ = self._result(self._submit(texts))  # type: ignore[misc]
        return vectors

    async def embed_timed(self, texts: list[str]) -> tuple[np.ndarray, float]:
        """`embed` awaited from an event loop, which stays free while the child works; also
        the seconds spent in the model itself (not waiting behind an earlier call)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32), 0.0
        try:
            return await asyncio.wrap_future(self._submit(texts))
        except BrokenProcessPool as exc:
            raise EmbedderError(f"the embedding process died: {exc}") from exc

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> EmbedderProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
