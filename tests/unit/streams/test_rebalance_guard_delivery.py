"""`Resumed`: a coroutine whose first step ran outside the event loop is finished exactly
where it stopped (the consumer's record delivery fast path, ADR 0086)."""

from __future__ import annotations

import asyncio

import pytest

from streamrec.streams.rebalance_guard import Resumed


async def _put(queue: asyncio.Queue[int], item: int, log: list[str]) -> int:
    log.append("start")
    try:
        await queue.put(item)  # waits only while the queue is full
    finally:
        log.append("end")
    return item * 10


def _first_step(coro):
    try:
        return False, coro.send(None)
    except StopIteration as stop:
        return True, stop.value


def test_a_coroutine_that_does_not_wait_finishes_in_its_first_step():
    async def main() -> None:
        queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
        log: list[str] = []
        assert _first_step(_put(queue, 1, log)) == (True, 10)
        assert log == ["start", "end"] and queue.get_nowait() == 1

    asyncio.run(main())


def test_a_waiting_coroutine_goes_on_where_it_stopped_and_returns_its_value():
    async def main() -> None:
        queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
        queue.put_nowait(0)  # full: the put waits
        log: list[str] = []
        coro = _put(queue, 2, log)
        done, pending = _first_step(coro)
        assert not done and log == ["start"]
        task = asyncio.ensure_future(Resumed(coro, pending))
        await asyncio.sleep(0)
        assert not task.done()
        assert queue.get_nowait() == 0  # room: the put goes on
        assert await asyncio.wait_for(task, 5) == 20
        assert log == ["start", "end"] and queue.get_nowait() == 2

    asyncio.run(main())


def test_cancelling_the_task_cancels_the_coroutine_where_it_waits():
    async def main() -> None:
        queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
        queue.put_nowait(0)
        log: list[str] = []
        coro = _put(queue, 3, log)
        _done, pending = _first_step(coro)
        task = asyncio.ensure_future(Resumed(coro, pending))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert log == ["start", "end"] and queue.qsize() == 1

    asyncio.run(main())


def test_an_error_after_the_wait_reaches_the_awaiter():
    async def fails_after(event: asyncio.Event) -> None:
        await event.wait()
        raise ValueError("after the wait")

    async def main() -> None:
        event = asyncio.Event()
        coro = fails_after(event)
        _done, pending = _first_step(coro)
        task = asyncio.ensure_future(Resumed(coro, pending))
        await asyncio.sleep(0)
        event.set()
        with pytest.raises(ValueError, match="after the wait"):
            await asyncio.wait_for(task, 5)

    asyncio.run(main())
