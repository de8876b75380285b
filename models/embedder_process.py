"""The embedding model in child processes of its own: texts in, float32 vectors out.

Responsibilities:
- start the model's child processes (`spawn`: never a fork of a process that runs an event
  loop, a Kafka client and torch): on CPU `embedding.processes` of them (0 = one per core),
  each with ONE torch thread, on cuda one with torch's defaults; load
  `models.embedder.Embedder` in each once and warm it up;
- embed texts (`embed`, or `embed_timed` from an event loop): one call is split across the
  children (`split`), which run in parallel, and the rows come back in input order, the
  L2-normalised float32 rows of an in-process `Embedder` (the same batches, see below; in
  bf16 autocast one thread rounds a little differently from several: cosine > 0.9999);
- surface a failure of a child as `EmbedderError`: a model error is re-raised with the
  child's message; a child that died (killed, out of memory) fails the pending and every
  later call at once instead of hanging (its `concurrent.futures.ProcessPoolExecutor` marks
  itself broken, and so does this object);
- on CPU with `embedding.cpu_precision` auto, probe fp32 against bf16 autocast once, in
  every child at the same time (the layout's own conditions: all cores busy), and set the
  faster in all of them (ADR 0103); the choice is logged and in `info.precision`;
- stop the children (`close`).

Why a process and not a thread (ADR 0080): torch releases the GIL in every op and must take
it back after; next to a Python thread that holds it (the Faust/aiokafka event loop of a
worker) each take-back can wait up to `sys.getswitchinterval()`, and a forward pass has
hundreds of ops. A child has its own GIL, so the worker's event loop cannot slow the
model down, whatever it is doing.

Why N single-threaded processes on CPU and not one with N threads (ADR 0088): torch's
OpenMP threads meet at a barrier after every parallel op; when the broker, Redis or the
worker preempts one of them, the others spin or sleep at the barrier until it comes back,
so a whole forward pass runs at the pace of its slowest thread. Single-threaded children
have no barrier to wait at: a preempted child delays only its own shard, and on an idle
2-core machine they were also faster (615 against 515 items/s, less CPU per item).

How a call is split (`split`): sentence-transformers sorts a call's texts by length
(characters, longest first) and cuts them into batches of `batch_size` (ADR 0014). `split`
does the same cut in the parent and deals the batches to the children, the costliest
first to the least loaded (cost: texts x longest length), so each child re-sorts its
texts into exactly the batches one process would have made (the same padding) and the
children get about the same work. A call smaller than `children x batch_size` is cut into
one run of similar lengths per child instead, so every child has some of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import math
import multiprocessing
import os
import signal
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

import numpy as np
from pydantic import BaseModel

from streamrec.infra.settings import Settings
from streamrec.models.embedder import Embedder, EmbedderError, Precision, ProbeResult, _pick_device

log = logging.getLogger(__name__)

# The child's one model; set by `_load`, the first task the child runs.
_model: Embedder | None = None


class EmbedderInfo(BaseModel):
    """What the parent learns about the model loaded in its children."""

    model_version: str
    device: str
    dim: int
    batch_size: int
    torch_threads: int  # per process
    pids: list[int]  # one child's own, or (`EmbedderProcess.info`) every child's
    precision: Precision = "fp32"
    probe: ProbeResult | None = None  # the start-up probe, when the precision was "auto"

    @property
    def pid(self) -> int:
        """The first child's pid."""
        return self.pids[0]

    @property
    def processes(self) -> int:
        return len(self.pids)


def cores() -> int:
    """The cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def cpu_processes(settings: Settings) -> int:
    """How many model processes to run on CPU: `embedding.processes`, 0 = one per core."""
    return settings.embedding.processes or cores()


def _gpu_driver_present() -> bool:
    """Whether torch might find a GPU here (NVIDIA or ROCm device files), without importing
    torch in this process; False means "auto" certainly resolves to CPU."""
    return bool(glob.glob("/dev/nvidia[0-9]*")) or os.path.exists("/dev/kfd")


def _load(settings: Settings, device: str | None, single_thread: bool) -> EmbedderInfo:
    """In the child: load the model once and pay the first calls' kernel set-up.

    single_thread: on CPU, run torch (intra-op OpenMP and inter-op pools) on one thread;
    ignored on cuda, where the threads only feed the GPU."""
    import torch

    global _model
    resolved = _pick_device(device or settings.embedding.device)
    if single_thread and resolved == "cpu":
        # Before the first op: OpenMP's pool is created at the first parallel region.
        torch.set_num_threads(1)
        # Raises once the inter-op pool was used in this process (never in a fresh child).
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(1)
    _model = Embedder(settings, device=resolved, probe=False)  # the parent probes them all
    # Texts of a few lengths, one batch: the first buffer of a backlog does not pay for it.
    _model.embed([" ".join(["warm-up"] * (1 + i % 24)) for i in range(_model.batch_size)])
    return EmbedderInfo(
        model_version=_model.model_version,
        device=_model.device,
        dim=_model.dim,
        batch_size=_model.batch_size,
        torch_threads=torch.get_num_threads(),
        pids=[os.getpid()],
        precision=_model.precision,
    )


def _probe() -> ProbeResult:
    """In the child: fp32 against bf16 autocast on this child's model."""
    if _model is None:  # pragma: no cover - _load always runs first in each child
        raise EmbedderError("the embedding process has no model loaded")
    return _model.probe()


def _set_precision(precision: Precision) -> Precision:
    if _model is None:  # pragma: no cover - _load always runs first in each child
        raise EmbedderError("the embedding process has no model loaded")
    _model.set_precision(precision)
    return _model.precision


def _embed(texts: list[str]) -> tuple[np.ndarray, float]:
    """In the child: the vectors and the seconds the model took (queueing left out)."""
    if _model is None:  # pragma: no cover - _load always runs first in each child
        raise EmbedderError("the embedding process has no model loaded")
    started = time.perf_counter()
    vectors = _model.embed(texts)
    return vectors, time.perf_counter() - started


def split(texts: Sequence[str], batch_size: int, shards: int) -> list[list[int]]:
    """Indices of `texts` per shard (at most `shards` lists, none empty).

    Texts are sorted the way sentence-transformers sorts a call (characters, longest
    first, stable here) and cut into runs: batches of `batch_size`, or one run per shard
    when the call is smaller than `shards` batches. Runs go costliest first to the shard
    with the least work so far (cost: texts x longest length in the run), so each shard
    holds whole batches of similar lengths and the shards about the same work."""
    if not texts:
        return []
    shards = max(1, min(shards, len(texts)))
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    run = min(batch_size, math.ceil(len(texts) / shards))
    runs = [order[start : start + run] for start in range(0, len(order), run)]

    def cost(r: list[int]) -> int:  # r[0] is the run's longest text
        return len(r) * max(1, len(texts[r[0]]))

    load = [0] * shards
    out: list[list[int]] = [[] for _ in range(shards)]
    for r in sorted(runs, key=cost, reverse=True):  # stable: equal costs keep length order
        target = min(range(shards), key=lambda s: (load[s], s))
        out[target].extend(r)
        load[target] += cost(r)
    return [indices for indices in out if indices]


class EmbedderProcess:
    """The model in one or more child processes; `embed` has the contract of `Embedder`.

    One single-worker pool per child (not one pool of N workers): each call's shards go to
    distinct children, a pool's first task (`_load`) reports that child's model or its
    load error, and a pool whose child died is broken on its own."""

    def __init__(self, settings: Settings, device: str | None = None) -> None:
        requested = device or settings.embedding.device
        wanted = 1 if requested.startswith("cuda") else cpu_processes(settings)
        single = wanted > 1  # applied by a child only when it runs on CPU
        self._pools: list[ProcessPoolExecutor] = []
        self._broken: str | None = None
        # "auto" on a machine with a GPU driver: the first child tells the device, the others
        # start once it said CPU. Otherwise all children load at once.
        first = 1 if requested == "auto" and _gpu_driver_present() else wanted
        try:
            infos = self._start(settings, device, single, first)
            if infos[0].device == "cpu" and len(infos) < wanted:  # "auto" resolved to CPU
                infos += self._start(settings, device, single, wanted - len(infos))
            probe = None
            if infos[0].device == "cpu" and settings.embedding.cpu_precision == "auto":
                probe = self._probe()
                infos = [i.model_copy(update={"precision": probe.choice()}) for i in infos]
        except BaseException:
            self.close()
            raise
        self.children: list[EmbedderInfo] = infos
        self.info = infos[0].model_copy(update={"pids": [i.pid for i in infos], "probe": probe})
        self.model_version = self.info.model_version
        self.device = self.info.device
        self.dim = self.info.dim
        self.batch_size = self.info.batch_size

    def _start(
        self, settings: Settings, device: str | None, single: bool, count: int
    ) -> list[EmbedderInfo]:
        """Start `count` children, all loading at once; their infos once all are ready."""
        context = multiprocessing.get_context("spawn")
        new = [ProcessPoolExecutor(max_workers=1, mp_context=context) for _ in range(count)]
        self._pools += new
        loads = [pool.submit(_load, settings, device, single) for pool in new]
        return [self._result(future) for future in loads]  # type: ignore[misc]

    def _probe(self) -> ProbeResult:
        """Every child probes at once; the faster precision over all of them is set in all."""
        probes = [pool.submit(_probe) for pool in self._pools]
        result = ProbeResult.combine([self._result(f) for f in probes])  # type: ignore[misc]
        choice = result.choice()
        for future in [pool.submit(_set_precision, choice) for pool in self._pools]:
            self._result(future)
        log.info(
            "embedding precision auto on CPU, %d process(es): %s",
            len(self._pools),
            result.describe(),
        )
        return result

    def _result(self, future: Future[object]) -> object:
        try:
            return future.result()
        except BrokenProcessPool as exc:
            self._broken = f"the embedding process died: {exc}"
            raise EmbedderError(self._broken) from exc

    def _submit(self, texts: list[str]) -> list[tuple[list[int], Future[tuple[np.ndarray, float]]]]:
        """Each shard of `texts` handed to its child: (indices, future)."""
        if self._broken is not None:
            raise EmbedderError(self._broken)
        shards = split(texts, self.batch_size, len(self._pools))
        out = []
        try:
            for pool, indices in zip(self._pools, shards, strict=False):
                out.append((indices, pool.submit(_embed, [texts[i] for i in indices])))
        except BrokenProcessPool as exc:  # raised at submit once a pool is known broken
            self._broken = f"the embedding process died: {exc}"
            raise EmbedderError(self._broken) from exc
        return out

    def _gather(self, n: int, shards: list[tuple[list[int], object]]) -> tuple[np.ndarray, float]:
        """The shards' rows scattered back into input order, and the call's model seconds:
        the children's seconds in the model summed and divided by the number of children.

        `shards` holds (indices, result or exception); any exception fails the call."""
        for _, result in shards:
            if isinstance(result, BrokenProcessPool):
                self._broken = f"the embedding process died: {result}"
                raise EmbedderError(self._broken) from result
        for _, result in shards:
            if isinstance(result, BaseException):
                raise result
        out = np.empty((n, self.dim), dtype=np.float32)
        busy = 0.0
        for indices, (vectors, shard_s) in shards:  # type: ignore[misc]
            out[indices] = vectors
            busy += shard_s
        return out, busy / len(self._pools)

    @staticmethod
    def _outcome(future: Future[tuple[np.ndarray, float]]) -> object:
        try:
            return future.result()
        except BaseException as exc:  # handed to _gather, which raises the right one
            return exc

    def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32, each row L2-normalised; empty input gives (0, dim)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        shards = self._submit(texts)
        # A child that dies fails the call at once, not after the other children's shares.
        done, _ = wait([f for _, f in shards], return_when=FIRST_EXCEPTION)
        self._raise_first_failure(done)
        vectors, _ = self._gather(len(texts), [(i, self._outcome(f)) for i, f in shards])
        return vectors

    async def embed_timed(self, texts: list[str]) -> tuple[np.ndarray, float]:
        """`embed` awaited from an event loop, which stays free while the children work;
        also the seconds spent in the model itself (not waiting behind an earlier call).

        With N children those are the children's model seconds for this call divided by N:
        the call's share of the model's capacity, which equals its wall time when the shares
        are even and all children free. Not the longest share's time: a child that finished
        its share starts on its share of the next call (the agent overlaps buffers), so the
        longest shares of successive calls overlap and their sum would exceed the run."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32), 0.0
        shards = self._submit(texts)
        waiting = [asyncio.wrap_future(f) for _, f in shards]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_EXCEPTION)
        try:
            self._raise_first_failure([f for _, f in shards if f.done()])
        except BaseException:
            for w in waiting:
                w.cancel()  # nobody reads the other shards: no "exception never retrieved"
            raise
        results = [w.result() for w in waiting]
        return self._gather(len(texts), list(zip([i for i, _ in shards], results, strict=True)))

    def _raise_first_failure(self, done: Iterable[Future[tuple[np.ndarray, float]]]) -> None:
        """Raise the failure of a finished shard, if one failed: a dead child marks the pool
        broken (every later call fails too)."""
        failures = [f.exception() for f in done if not f.cancelled() and f.exception()]
        broken = [e for e in failures if isinstance(e, BrokenProcessPool)]
        if broken:
            self._broken = f"the embedding process died: {broken[0]}"
            raise EmbedderError(self._broken) from broken[0]
        if failures:
            raise failures[0]  # type: ignore[misc]

    def close(self) -> None:
        if self._broken is not None:
            # The live children may still be on shares of a failed call that nobody reads:
            # end them rather than wait for that work.
            for info in getattr(self, "children", []):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(info.pid, signal.SIGKILL)
        for pool in self._pools:
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> EmbedderProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
