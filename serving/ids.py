"""Unique ids for the hot path without a system call each.

`uuid.uuid4()` reads 16 bytes from the kernel (`getrandom`) per id; on this project's
machines a system call is expensive, and the serving worker made two ids per request (the
request id of a request without `X-Request-ID`, the impression's `event_id`): ~2% of the event
loop's samples (ADR 0055). `new_id()` is 32 hex characters like `uuid4().hex`: a
random 64-bit prefix drawn once per process (again after a fork) and a 64-bit counter, so ids
never repeat within a process and collide across processes with probability ~2^-64 per
pair of processes, which is what the analytics sink's idempotent inserts need of
`event_id` (ADR 0050).
"""

from __future__ import annotations

import itertools
import os

_state: list = []


def _reset() -> None:
    _state[:] = [os.urandom(8).hex(), itertools.count()]


def new_id() -> str:
    prefix, counter = _state
    return f"{prefix}{next(counter):016x}"


_reset()
os.register_at_fork(after_in_child=_reset)
