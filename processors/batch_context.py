"""Table writes from inside a Faust batch (`stream.take_events`).

Faust routes a table write (its changelog message and its local store partition) by the
*current event*, a context variable the stream sets per event. A batch agent handles many
events, from several partitions, after the stream moved on, so before touching a table for
one event the processor makes that event current again. `as_current(event)` does that and
restores the previous value afterwards.

`DurableTable` lets the batch wait until its state updates are in the changelog before the
batch is acked (see its docstring for why faust's own flush is not enough).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import faust
from faust.streams import _current_event
from faust.types import EventT
from faust.types.tuples import FutureMessage


@contextmanager
def as_current(event: EventT) -> Iterator[None]:
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class DurableTable(faust.Table):
    """A Faust table whose changelog sends can be awaited before a batch is acked.

    faust commits a batch's offsets after `producer.flush()`, but its send buffer's flush gives
    up after 100 ms without progress (faust-streaming 0.15.3 `ProducerBuffer.flush_atmost`),
    so on a busy machine offsets could be committed while state updates were still
    unsent; a worker stopped then loses them and the next owner of the partition recovers
    stale state. `changelog_sent()` waits for the broker's acknowledgement of every changelog
    message sent since the last call.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._unsent: list[FutureMessage] = []
        super().__init__(*args, **kwargs)

    def send_changelog(self, *args: Any, **kwargs: Any) -> FutureMessage:
        fut = super().send_changelog(*args, **kwargs)
        self._unsent.append(fut)
        return fut

    async def changelog_sent(self) -> None:
        unsent, self._unsent = self._unsent, []
        if unsent:
            await asyncio.gather(*unsent)


def durable_table(app: faust.App, name: str, **kwargs: Any) -> DurableTable:
    """`app.Table(name, **kwargs)`, as a `DurableTable`."""
    table = DurableTable(app, name=name, beacon=app.tables.beacon, **kwargs)
    return cast(DurableTable, app.tables.add(table))
