"""A Faust consumer that never delivers records fetched before a rebalance after it.

Why it exists (faust-streaming 0.15.3, aiokafka driver; the stalls reported as faust #175):
the fetcher loop (`Consumer._drain_messages`) awaits a fetch that runs in the consumer
thread, then hands each record to the streams and records its offset as the partition's
*read offset*. A fetch (or a delivery held up by a commit) that straddles a rebalance comes
back after the rebalance has already sought every partition to its committed offset `c`, and
faust reads the generation id only *after* the fetch, so the stale record (offset `x > c`) is
delivered and the read offset jumps to `x`. What follows is one of two failures, both seen
in `tests/integration/processors/test_session_features_scale_out.py`:
- the re-fetched records `c .. x-1` are older than the read offset, so faust drops them
  ("DROPPED MESSAGE ROFF"): they are never acked, the committed offset stays at `c` for
  ever and the worker looks stalled with a lag that never drains;
- or faust sees `x` as a gap after `c`, marks `c+1 .. x` as done, and commits past records
  it never processed: features silently lost.

Responsibilities:
- remember the consumer generation before each fetch and deliver its records only while
  that generation is current and the flow is active;
- when records are dropped after the new generation has started, seek back to the committed
  offsets (what faust's own rebalance does), so they are fetched again; redeliveries are
  at-least-once duplicates that the processors already absorb;
- hand each record to the streams without faust's per-record tasks when the streams take
  it at once (`GuardedConsumer._deliver`, `Resumed`);
- keep the records already handed to the streams when faust resumes a flow that is running
  (`KeepDeliveredFlowControl`: mode's flow control cleared the streams' queues on every
  resume, and faust resumes again at the end of each recovery, after its seek);
- `StallWatchdog` (`watch_stalls`, opt-in): a safety net for stalls of other causes
  (committed offset flat while the partition is behind its end: resume, and seek back to
  the committed offsets);
- `install(app)`: make an app's transport create this consumer (`streams.app` does it for
  every processor).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Generator
from typing import Any, cast

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message
from mode.utils.queues import FlowControlEvent

log = logging.getLogger(__name__)


class GuardedConsumer(faust_aiokafka.Consumer):
    """The aiokafka consumer with records checked against the generation they were fetched in."""

    _fetch_generation: int = -1

    def _stale(self) -> bool:
        return not self.flow_active or self.app.consumer_generation_id != self._fetch_generation

    async def _drop_stale(self, what: str) -> None:
        if self.flow_active and not self.should_stop:
            # The rebalance already sought to the committed offsets, and these records moved
            # the fetch position past them: seek again so they are fetched again.
            log.warning("rebalance guard: %s fetched before a rebalance; seeking back", what)
            await self.perform_seek()
        # Otherwise a rebalance is under way and seeks when it completes.

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        """faust's getmany, with the generation read before the fetch instead of after."""
        self._fetch_generation = self.app.consumer_generation_id
        records, active_partitions = await self._wait_next_records(timeout)
        if records is None or self.should_stop:
            return
        if not self.flow_active:
            await self.perform_seek()  # what faust does with a fetch while the flow is stopped
            return
        if self._stale():
            if records:
                await self._drop_stale(f"{sum(map(len, records.values()))} records")
            return
        to_message = self._to_message
        for tp, record in self.scheduler.iterate(records):
            if self._stale():
                await self._drop_stale("the rest of a batch")
                return
            if (
                active_partitions is None
                or tp in active_partitions
                or tp in self._buffered_partitions
            ):
                self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                yield tp, to_message(tp, record)

    async def _skip(self, tp: TP, message: Message) -> bool:
        """Whether to leave this record undelivered (hook; `NoGapConsumer`)."""
        return False

    def _delivered(self, tp: TP, offset: int) -> None:
        """Called after a record was handed to the streams (hook; `NoGapConsumer`)."""

    async def _deliver(self, delivery: Coroutine[Any, Any, Any]) -> None:
        """Run the streams' callback for one record, as faust does but without its cost when
        the callback does not wait.

        faust runs every record's callback through `wait_first(callback, suspend_flow)`: four
        tasks and an `asyncio.wait` per record, so that a callback blocked on a full stream
        queue can be interrupted by a suspension of the flow (a rebalance). The callback
        almost always finishes without waiting (the queue has room): its first step is run
        here, and only a callback that does wait is handed, where it stopped, to
        `wait_first` (docs/adr/0086-record-delivery-fast-path.md).
        """
        try:
            pending = delivery.send(None)
        except StopIteration:
            return  # delivered without waiting: nothing a suspension could interrupt
        await self.wait_first(Resumed(delivery, pending), self.suspend_flow.wait())

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - see module doc
        """faust's fetcher loop, plus: a record held up (by a commit) until a rebalance is
        over is not delivered and does not move the partition's read offset."""
        callback = self.callback
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        acks_enabled_for = self.app.topics.acks_enabled_for
        commit_every = self._commit_every
        since_yield = 0
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                await self.sleep(0)
                if self.should_stop:
                    continue
                async for tp, message in self.getmany(timeout=1.0):
                    since_yield += 1
                    if since_yield > 100:
                        await asyncio.sleep(0)
                        since_yield = 0
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    if self._stale():
                        await self._drop_stale("a record held up by a commit")
                        break
                    if await self._skip(tp, message):
                        continue
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset and acks_enabled_for(message.topic):
                            await self._add_gap(tp, r_offset + 1, offset)
                        await self._deliver(callback(message))
                        if self._stale():
                            # Interrupted by a rebalance: the rebalance's seek decides what
                            # is read next, not this record.
                            break
                        set_read_offset(tp, offset)
                        self._delivered(tp, offset)
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)


class Resumed:
    """An awaitable that finishes a coroutine whose first step already ran and stopped on
    `pending` (what it yielded to the event loop: usually a future it waits for).

    Awaiting it (or wrapping it in a task) goes on exactly where the coroutine stopped:
    `pending` goes to the event loop first, then every value sent or exception thrown in
    (a cancellation) is passed on to the coroutine.
    """

    __slots__ = ("coro", "pending")

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any) -> None:
        self.coro = coro
        self.pending = pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value = self.coro, self.pending
        while True:
            try:
                sent = yield value
            except BaseException as exc:  # thrown in by the task: pass it on
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


class KeepDeliveredFlowControl(FlowControlEvent):
    """faust's flow control of the streams, except that resuming a running flow keeps what
    the streams' queues hold.

    mode's `resume` clears every stream queue on each call, and faust calls it twice per
    recovery: when it starts (after the revoke's suspension: the queues may hold records of
    the previous assignment) and when it completes, after resuming and seeking the assigned
    partitions. The second call dropped the records the fetcher delivered during that seek:
    never processed, never acked, never fetched again; commits stopped at them, and after
    the stall watchdog's seek-back they came too late to count (features lost; ADR 0086).
    Only a resume that ends a suspension clears here.
    """

    def resume(self) -> None:
        if self.is_active():
            return  # already running: the queues hold records of the current assignment
        super().resume()


class GuardedTransport(faust_aiokafka.Transport):
    Consumer = GuardedConsumer


class NoGapConsumer(GuardedConsumer):
    """A `GuardedConsumer` that never skips records of a topic it acks.

    faust marks the offsets between the last record read and a later one as done (meant
    for compacted topics and transaction markers). Our event topics have neither, so a jump
    means the fetch position was ahead of what was read (seen right after a rebalance, on
    every partition), and marking the records done commits past them: features lost. Here a
    record past the next expected offset is not delivered; the partition is sought back to
    its committed offset (at least once: what was read and not committed comes again) and
    read on from there at once, so the skipped events are not held back long enough to
    count as too late. Changelog topics (compacted) are left to faust.
    """

    def _expected(self) -> dict[TP, int]:
        try:
            return self.__expected  # type: ignore[has-type]
        except AttributeError:
            self.__expected: dict[TP, int] = {}
            self.__rewound: set[TP] = set()
            return self.__expected

    async def perform_seek(self) -> None:
        await super().perform_seek()
        expected = self._expected()
        expected.clear()
        self.__rewound.clear()
        expected.update({tp: off for tp, off in self._committed_offset.items() if off is not None})

    async def _skip(self, tp: TP, message: Message) -> bool:
        expected = self._expected().get(tp)
        if expected is None or message.offset <= expected:
            return False
        if tp.topic in cast(Any, self.app).tables.changelog_topics:
            return False
        if not self.app.topics.acks_enabled_for(message.topic):
            return False
        if tp in self.__rewound:
            return True  # the rest of a batch fetched before the seek below
        committed = self._committed_offset.get(tp)
        target = expected if committed is None else min(committed, expected)
        log.warning(
            "rebalance guard: %s jumped from %d to %d; seeking back to %d",
            tp,
            expected,
            message.offset,
            target,
        )
        await self.seek(tp, target)
        self.__expected[tp] = target
        self.__rewound.add(tp)
        return True

    def _delivered(self, tp: TP, offset: int) -> None:
        self._expected()[tp] = offset + 1
        self.__rewound.discard(tp)

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        # Not reached for our event topics (`_skip` comes first); never mark records done.
        log.warning("rebalance guard: offsets %d..%d of %s unread", offset_from, offset_to - 1, tp)


class StallWatchdog:
    """Restarts fetching of a partition whose committed offset is stuck behind its end.

    A safety net behind `GuardedConsumer` for stalls of other causes (faust #175 has several:
    partitions left paused after a rebalance, read offsets ahead of the fetch position).
    Every `check_s` it compares, for each assigned non-changelog partition, the committed
    offset with the broker's end offset. A partition behind its end whose committed offset
    has not moved for `stall_s` (while no rebalance or recovery is under way) is a stall:
    the watchdog logs the consumer's state, resumes the partitions and seeks every partition
    back to its committed offset, which is what faust does after a rebalance (the events
    after it are redelivered: at least once, as after any rebalance).
    """

    def __init__(self, app: faust.App, stall_s: float, check_s: float) -> None:
        self.app = app
        self.stall_s = stall_s
        self.check_s = check_s
        self._since: dict[TP, tuple[int, float]] = {}
        self._last_check = 0.0

    def _busy(self) -> bool:
        app = cast(Any, self.app)
        consumer = app.consumer
        return bool(app.rebalancing or app.in_recovery or not consumer.flow_active)

    async def check(self, now: float) -> None:
        late = now - self._last_check > 3 * self.check_s
        self._last_check = now
        if late or self._busy():
            # A rebalance, or a process that was not running (suspended, starved): start over.
            self._since.clear()
            return
        consumer = cast(Any, self.app.consumer)
        changelogs = cast(Any, self.app).tables.changelog_topics
        tps = {tp for tp in consumer.assignment() if tp.topic not in changelogs}
        if not tps:
            return
        ends = await consumer.highwaters(*tps)
        stalled = []
        for tp in tps:
            committed = consumer._committed_offset.get(tp) or 0
            end = ends.get(tp)
            if end is None or committed >= end:
                self._since.pop(tp, None)
                continue
            seen = self._since.get(tp)
            if seen is None or seen[0] != committed:
                self._since[tp] = (committed, now)
            elif now - seen[1] >= self.stall_s:
                stalled.append(tp)
        if stalled and not self._busy():
            log.warning(
                "stall watchdog: %s behind their end with no commit for %.0f s; "
                "resuming and seeking to committed (paused=%s active=%s buffered=%s "
                "read=%s committed=%s ends=%s unacked=%d)",
                sorted(stalled),
                self.stall_s,
                sorted(consumer._paused_partitions),
                sorted(consumer._active_partitions or ()),
                sorted(consumer._buffered_partitions),
                {tp.partition: consumer._read_offset.get(tp) for tp in stalled},
                {tp.partition: consumer._committed_offset.get(tp) for tp in stalled},
                {tp.partition: ends.get(tp) for tp in stalled},
                len(consumer.unacked),
            )
            consumer.resume_partitions(tps)
            await consumer.perform_seek()
            self._since.clear()


def install(app: faust.App) -> None:
    """Give `app` a transport whose consumer is a `GuardedConsumer` and a flow control that
    keeps delivered records (`KeepDeliveredFlowControl`), before it starts."""
    app.transport = GuardedTransport(cast(Any, app.conf).broker_consumer, app)
    if "flow_control" in vars(app):
        # Queues made before this point would be managed by faust's own flow control.
        raise RuntimeError("install must be called before the app's flow control exists")
    # No loop bound here: mode's events take the running loop when first awaited.
    app.flow_control = KeepDeliveredFlowControl()


def watch_stalls(app: faust.App, stall_s: float, check_s: float = 5.0) -> StallWatchdog:
    """Run a `StallWatchdog` on `app`, whose consumer becomes a `NoGapConsumer` (opt-in: only
    for processors whose redelivered events are harmless, since a false alarm redelivers
    what was not committed yet)."""
    if cast(Any, app)._consumer is not None:
        raise RuntimeError("watch_stalls must be called before the app's consumer exists")
    app.transport.Consumer = NoGapConsumer  # type: ignore[misc]
    watchdog = StallWatchdog(app, stall_s, check_s)

    @app.timer(check_s, name=f"{app.conf.id}-stall-watchdog")
    async def _stall_watchdog() -> None:
        await watchdog.check(time.monotonic())

    return watchdog
