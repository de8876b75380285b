"""A batch an agent has begun is finished even when the worker is stopped meanwhile.

On a stop, mode cancels each agent's actor task wherever it awaits, then waits for the task
to end. A batch cancelled between its writes leaves only some of them done: the session
states in the changelog, say, but the batch's counts never added. Whoever redoes the batch
finds its events already applied and counts them as redeliveries, so the counts fall short
of what was applied.

`whole_batch(work)` runs the batch's work as a task of its own, out of the cancellation's
reach: the agent waits for it to end and then takes the cancellation (the stop goes on).
The work is bounded by its own deadlines (the producer's flush, Redis's socket timeout),
so a stop waits at most that long. A failure of the work is raised as it is, for
`stop_on_failure`.

Usage (inside an agent)::

    async for batch in stream.take_events(500, within=0.1):
        with stop_on_failure(NAME):
            counts = await whole_batch(handle_and_count(batch))
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def whole_batch(work: Awaitable[T]) -> T:
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():  # the work itself was cancelled: nothing is left to wait for
                break
            cancelled = True  # the agent was: finish the work first
    if cancelled and not task.cancelled() and task.exception() is None:
        raise asyncio.CancelledError  # the batch is done: now the stop goes on
    return task.result()  # the work's result, its failure or its own cancellation
