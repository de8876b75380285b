"""Table writes from inside a Faust batch (`stream.take_events`).

Faust routes a table write (its changelog message and its local store partition) by the
*current event*, a context variable the stream sets per event. A batch agent handles many
events, from several partitions, after the stream moved on, so before touching a table for
one event the processor makes that event current again. `as_current(event)` does that and
restores the previous value afterwards.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from faust.streams import _current_event
from faust.types import EventT


@contextmanager
def as_current(event: EventT) -> Iterator[None]:
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)
