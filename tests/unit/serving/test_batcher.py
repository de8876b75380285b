import asyncio
import threading
import time

import pytest

from streamrec.serving.batcher import MicroBatcher, RequestBatcher


async def test_concurrent_submissions_share_batches_and_get_their_own_results():
    sizes: list[int] = []
    gate, started = threading.Event(), threading.Event()

    def run(batch: list[int]) -> list[int]:
        started.set()
        gate.wait(5)
        sizes.append(len(batch))
        return [x * 10 for x in batch]

    b: MicroBatcher[int, int] = MicroBatcher(run, max_batch=8, max_wait_s=0.05)
    b.start()
    try:
        first = asyncio.create_task(b.submit(0))
        assert await asyncio.to_thread(started.wait, 5)  # the first batch runs, held at the gate
        rest = [asyncio.create_task(b.submit(i)) for i in range(1, 20)]
        await asyncio.sleep(0)
        gate.set()
        results = await asyncio.gather(first, *rest)
    finally:
        await b.stop()
    assert results == [i * 10 for i in range(20)]
    assert sizes[0] == 1 and max(sizes) == 8 and sum(sizes) == 20


async def test_a_failing_batch_fails_its_callers_and_the_next_batch_runs():
    calls = 0

    def run(batch: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("model broke")
        return batch

    b: MicroBatcher[int, int] = MicroBatcher(run, max_batch=4, max_wait_s=0.001)
    b.start()
    try:
        with pytest.raises(RuntimeError):
            await b.submit(1)
        assert await b.submit(2) == 2
    finally:
        await b.stop()


async def test_a_caller_that_gave_up_is_skipped():
    seen: list[list[int]] = []
    gate, started = threading.Event(), threading.Event()

    def run(batch: list[int]) -> list[int]:
        started.set()
        gate.wait(5)
        seen.append(batch)
        return batch

    b: MicroBatcher[int, int] = MicroBatcher(run, max_batch=4, max_wait_s=0.001)
    b.start()
    try:
        busy = asyncio.create_task(b.submit(0))
        assert await asyncio.to_thread(started.wait, 5)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(b.submit(1), 0.01)
        gate.set()
        await busy
        assert await b.submit(2) == 2
    finally:
        await b.stop()
    assert [1] not in seen and all(1 not in s for s in seen)


async def test_slow_tells_a_slow_model_from_a_long_queue():
    release = threading.Event()

    def run(items):
        release.wait(5)  # a model call that takes as long as the test says
        return items

    b = MicroBatcher(run, max_batch=1, max_wait_s=0.0)
    b.start()
    try:
        assert not b.slow(0.05)  # idle, nothing measured yet
        first = asyncio.create_task(b.submit(1))
        while b.running_since is None:
            await asyncio.sleep(0.005)
        assert not b.slow(10.0)
        await asyncio.sleep(0.06)
        assert b.slow(0.05)  # the batch running now is past the limit: a hung model
        release.set()
        assert await first == 1
        assert b.slow(0.05) and not b.slow(10.0)  # judged by the last batch's time now
        assert b.last_item_s >= 0.06
    finally:
        release.set()
        await b.stop()


def test_a_big_batch_is_judged_by_its_size_at_the_last_rate():
    b = MicroBatcher(lambda items: items, max_batch=32)
    b.last_item_s = 0.002  # the last batch: 2 ms a request, a healthy model
    b.running_size = 32
    b.running_since = time.monotonic() - 0.12  # past a 75 ms limit, within 75 + 2 x 64 ms
    assert not b.slow(0.075)
    b.running_since = time.monotonic() - 0.5  # far past what 32 requests take: hung
    assert b.slow(0.075)
    b.running_since = None
    b.last_item_s = 0.1  # the model itself got slower than the limit per request
    assert b.slow(0.075)


async def test_request_batches_answer_each_member_when_it_is_ready():
    later = asyncio.Event()
    seen: list[list[int]] = []

    async def handle(batch: list[int], reply) -> None:
        seen.append(batch)
        for n, x in enumerate(batch):
            if x < 0:
                reply(n, ValueError(x))  # this member's own failure
            elif x == 0:
                reply(n, "early")  # answered before the rest of its batch is done
        await later.wait()
        for n, x in enumerate(batch):
            if x > 0:
                reply(n, x * 10)

    b: RequestBatcher[int, object] = RequestBatcher(handle, max_batch=8, max_wait_s=0.05)
    b.start()
    try:
        tasks = [asyncio.create_task(b.submit(x)) for x in (0, 1, -1, 2)]
        assert await tasks[0] == "early"
        with pytest.raises(ValueError):
            await tasks[2]
        assert not tasks[1].done()
        later.set()
        assert [await tasks[1], await tasks[3]] == [10, 20]
    finally:
        await b.stop()
    assert seen == [[0, 1, -1, 2]] and b.sizes == [4]


async def test_a_request_that_finds_no_batch_running_starts_one_at_once():
    release = asyncio.Event()
    seen: list[list[int]] = []

    async def handle(batch: list[int], reply) -> None:
        seen.append(batch)
        if batch[0] == 1:
            await release.wait()  # the first batch runs until the later arrivals queued
        for n, x in enumerate(batch):
            reply(n, x)

    # A wait for company far longer than the test: only the idle start can answer in time.
    b: RequestBatcher[int, int] = RequestBatcher(
        handle, max_batch=8, max_wait_s=30.0, max_running=1, wait_when_idle=False
    )
    b.start()
    try:
        first = asyncio.create_task(b.submit(1))
        while not seen:
            await asyncio.sleep(0)
        later = [asyncio.create_task(b.submit(x)) for x in (2, 3)]
        await asyncio.sleep(0)
        release.set()  # the batcher is idle again once this batch ends: 2 and 3 go together
        assert await asyncio.wait_for(first, 5) == 1
        assert await asyncio.wait_for(asyncio.gather(*later), 5) == [2, 3]
    finally:
        await b.stop()
    assert seen == [[1], [2, 3]]


async def test_with_wait_when_idle_a_lone_request_waits_for_company():
    b: RequestBatcher[int, int] = RequestBatcher(
        lambda batch, reply: _reply_all(batch, reply), max_batch=8, max_wait_s=0.05
    )
    b.start()
    try:
        t0 = time.monotonic()
        assert await b.submit(7) == 7
        assert time.monotonic() - t0 >= 0.045
    finally:
        await b.stop()


async def _reply_all(batch: list[int], reply) -> None:
    for n, x in enumerate(batch):
        reply(n, x)
