"""A failure a Faust agent does not handle ends the worker at once, before Faust acks anything.

Faust's `Stream.take_events` acks every event of a batch in a `finally`, even when the agent's
body raised, and its supervisor then restarts the agent on the next batch: the failed batch
is committed (skipped) while the process looks alive. Around each batch's handling,
`stop_on_failure(processor)` turns any exception into `metrics.exit_stuck`: the heartbeat
and `/readyz` say why, and the process ends with `metrics.EXIT_STUCK` before the generator's
`finally` runs, so nothing of the batch (nor of any batch acked but not yet committed) is
committed. Whatever runs the worker restarts it, and the batch is redone (at least once).

`asyncio.CancelledError` (a rebalance, a stop) is not a failure and passes through.

Usage (inside an agent)::

    async for batch in stream.take_events(500, within=0.1):
        with stop_on_failure(NAME):
            await handle(batch)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from streamrec.streams import metrics

log = logging.getLogger(__name__)


@contextmanager
def stop_on_failure(processor: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        log.exception("%s: a batch failed; stopping before its offsets are committed", processor)
        metrics.exit_stuck(f"{processor}: batch failed: {type(exc).__name__}: {exc}"[:2000])
