"""Micro-batching: concurrent requests' ranking work scored in one model call.

Responsibilities:
- collect submitted inputs until `max_batch` are waiting or `max_wait_s` has passed since
  the first one, then run the synchronous `run_batch` on a dedicated thread (the model keeps
  the event loop free; one thread so batches never compete for the cores or the GPU);
- while a batch runs the next one fills, so under load batches grow by themselves and the
  per-call overhead is shared (NOTES: 32x500 candidates score ~5x faster per request than 1);
- give each caller its own result; a caller that gave up (deadline) is skipped if its batch
  has not started, and a failing batch fails each of its callers with the error;
- `RequestBatcher`: the same collection for whole admitted requests, whose batch handler is
  a coroutine on the event loop (one Redis trip, one model call, one re-rank and one answer
  read for the batch); each batch runs as its own task, at most `max_running` at once, so
  the next one fills while they wait on Redis or the model. While that many run, arrivals
  wait and join the next batch: under load batches grow by themselves. A request that finds
  no batch running starts one at once unless `wait_when_idle`; otherwise it waits no more
  than `max_wait_s` for company.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


async def _collect(
    queue: asyncio.Queue[tuple[T, asyncio.Future[R]]], max_batch: int, max_wait_s: float
) -> list[tuple[T, asyncio.Future[R]]]:
    """The first waiting input, then whatever else arrives until `max_batch` are held or
    `max_wait_s` has passed since the first; callers that gave up are left out."""
    batch = [await queue.get()]
    deadline = time.monotonic() + max_wait_s
    while len(batch) < max_batch:
        try:
            batch.append(queue.get_nowait())
            continue
        except asyncio.QueueEmpty:
            pass
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            async with asyncio.timeout(left):
                batch.append(await queue.get())
        except TimeoutError:
            break
    return [(item, fut) for item, fut in batch if not fut.done()]


class MicroBatcher(Generic[T, R]):
    def __init__(
        self,
        run_batch: Callable[[list[T]], list[R]],
        max_batch: int = 32,
        max_wait_s: float = 0.002,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch
        self.queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] | None = None
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="ranker")
        self.task: asyncio.Task[None] | None = None
        self.batches = 0
        self.running_since: float | None = None  # when the batch now running started
        self.running_size = 0  # requests in the batch now running
        self.last_item_s = 0.0  # the last finished batch's time per request in it

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.create_task(self._loop(), name="micro-batcher")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
        self.executor.shutdown(wait=True, cancel_futures=True)

    def slow(self, limit_s: float) -> bool:
        """Whether the model itself is slower than `limit_s`: its last batch took longer per
        request, or the batch running now has taken longer than the limit plus twice what a
        batch of its size took at the last measured rate (a hung model). Otherwise a caller
        that gave up waited in the queue behind busy batches: overload, not a model failure (a
        batch of 32 taking 80 ms is a healthy model under load, and judged by the limit alone
        it opened the model's breaker at ~350 req/s on 2 cores: every answer SIMPLE_RANKING
        for the breaker's reset time)."""
        running = self.running_since
        expected_s = 2.0 * self.last_item_s * self.running_size
        return self.last_item_s > limit_s or (
            running is not None and time.monotonic() - running > limit_s + expected_s
        )

    async def submit(self, item: T) -> R:
        if self.queue is None:
            raise RuntimeError("batcher not started")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((item, future))
        return await future

    def submit_many(self, items: list[T]) -> list[asyncio.Future[R]]:
        """Queue a whole batch's inputs at once (a request batch's model call): they are
        taken together, with anything else queued, up to `max_batch`; one future each."""
        if self.queue is None:
            raise RuntimeError("batcher not started")
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[R]] = []
        for item in items:
            future: asyncio.Future[R] = loop.create_future()
            self.queue.put_nowait((item, future))
            futures.append(future)
        return futures

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            assert self.queue is not None
            batch = await _collect(self.queue, self.max_batch, self.max_wait_s)
            if not batch:
                continue
            items = [item for item, _ in batch]
            t0 = time.perf_counter()
            self.running_size = len(items)
            self.running_since = time.monotonic()
            try:
                results = await loop.run_in_executor(self.executor, self.run_batch, items)
            except Exception as exc:  # the batch failed: each caller decides (fallback)
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            finally:
                self.running_since = None
                self.last_item_s = (time.perf_counter() - t0) / len(items)
            self.batches += 1
            if self.on_batch is not None:
                self.on_batch(len(items), time.perf_counter() - t0)
            for (_, fut), result in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(result)


class RequestBatcher(Generic[T, R]):
    """Admitted requests collected into batches for one coroutine, `handle(items, reply)`,
    which answers each request through `reply(index, result or exception)`, when that
    request is ready (a member past its deadline is answered before the others). Up to
    `max_batch` requests or `max_wait_s` after the first, as `MicroBatcher`; unlike it the
    handler runs on the event loop (its waits are Redis and the model's own thread), one
    task per batch."""

    def __init__(
        self,
        handle: Callable[[list[T], Callable[[int, R | BaseException], None]], Awaitable[None]],
        max_batch: int = 32,
        max_wait_s: float = 0.002,
        on_batch: Callable[[int, float], None] | None = None,
        max_running: int = 2,
        wait_when_idle: bool = True,
    ) -> None:
        self.handle = handle
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.wait_when_idle = wait_when_idle
        self.on_batch = on_batch
        self.max_running = max_running
        self._slots: asyncio.Semaphore | None = None
        self.queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] | None = None
        self.task: asyncio.Task[None] | None = None
        self.running: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.sizes: list[int] = []  # the last batches' sizes (bounded), for tests and checks

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self._slots = asyncio.Semaphore(self.max_running)
        self.task = asyncio.create_task(self._loop(), name="request-batcher")

    async def stop(self) -> None:
        tasks = [t for t in (self.task, *self.running) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.task = None

    async def submit(self, item: T) -> R:
        return await self.submit_future(item)

    def submit_future(self, item: T) -> asyncio.Future[R]:
        """`submit` without a coroutine: the future its batch answers."""
        if self.queue is None:
            raise RuntimeError("batcher not started")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((item, future))
        return future

    async def _loop(self) -> None:
        assert self.queue is not None and self._slots is not None
        slots = self._slots
        while True:
            await slots.acquire()  # while `max_running` batches run, arrivals keep queueing
            # Waiting for company pays only while a batch runs: the wait overlaps it. A
            # request that finds the worker idle would wait for nothing but the timer.
            idle = not self.running and not self.wait_when_idle
            batch = await _collect(self.queue, self.max_batch, 0.0 if idle else self.max_wait_s)
            if not batch:
                slots.release()
                continue
            task = asyncio.create_task(self._run(batch), name="request-batch")
            self.running.add(task)
            task.add_done_callback(self.running.discard)
            task.add_done_callback(lambda _: slots.release())

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        t0 = time.perf_counter()
        futures = [fut for _, fut in batch]

        def reply(index: int, result: R | BaseException) -> None:
            fut = futures[index]
            if fut.done():  # its caller gave up
                return
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)

        try:
            await self.handle([item for item, _ in batch], reply)
        except Exception as exc:  # a bug in the handler: each caller still waiting sees it
            for n in range(len(futures)):
                reply(n, exc)
        except BaseException:  # cancelled (stop): the callers are cancelled too
            for fut in futures:
                if not fut.done():
                    fut.cancel()
            raise
        for n, fut in enumerate(futures):
            if not fut.done():
                reply(n, RuntimeError("the batch ended without answering this request"))
        self.batches += 1
        self.sizes = [*self.sizes[-63:], len(batch)]
        if self.on_batch is not None:
            self.on_batch(len(batch), time.perf_counter() - t0)
