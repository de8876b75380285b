"""`whole_batch`: a batch begun is finished when its agent is cancelled (a stop)."""

from __future__ import annotations

import asyncio

import pytest

from streamrec.streams.whole_batch import whole_batch


async def _two_writes(done: list[str], began: asyncio.Event, between: asyncio.Event) -> str:
    done.append("states")
    began.set()
    await between.wait()
    done.append("counts")
    return "ok"


async def _agent(work) -> str:
    return await whole_batch(work)


def test_a_cancelled_agent_finishes_its_batch_then_takes_the_cancellation():
    async def main() -> list[str]:
        done: list[str] = []
        began, between = asyncio.Event(), asyncio.Event()
        agent = asyncio.ensure_future(_agent(_two_writes(done, began, between)))
        await began.wait()  # the batch is between its two writes
        assert done == ["states"]
        agent.cancel()
        await asyncio.sleep(0)
        agent.cancel()  # cancelled twice, as a stop and a supervisor may
        await asyncio.sleep(0)
        assert not agent.done()
        between.set()
        with pytest.raises(asyncio.CancelledError):
            await agent
        return done

    assert asyncio.run(main()) == ["states", "counts"]


def test_the_result_and_a_failure_pass_through():
    async def fails() -> None:
        raise RuntimeError("redis down")

    async def main() -> None:
        assert await whole_batch(asyncio.sleep(0, "counts")) == "counts"
        with pytest.raises(RuntimeError, match="redis down"):
            await whole_batch(fails())

    asyncio.run(main())


def test_a_failure_while_the_agent_is_cancelled_is_raised_not_the_cancellation():
    async def fails_later(began: asyncio.Event, go: asyncio.Event) -> None:
        began.set()
        await go.wait()
        raise RuntimeError("flush failed")

    async def main() -> None:
        began, go = asyncio.Event(), asyncio.Event()
        agent = asyncio.ensure_future(_agent(fails_later(began, go)))
        await began.wait()
        agent.cancel()
        await asyncio.sleep(0)
        go.set()
        with pytest.raises(RuntimeError, match="flush failed"):
            await agent

    asyncio.run(main())


def test_work_cancelled_by_itself_ends_the_agent_cancelled():
    async def cancels_itself() -> None:
        raise asyncio.CancelledError

    async def main() -> None:
        with pytest.raises(asyncio.CancelledError):
            await whole_batch(cancels_itself())

    asyncio.run(main())
