"""Replay: produce an event log to a topic, for backfills and demos.

The producer is confluent-kafka's (idempotent, acks=all, compressed, batched). Pacing is
`max` (as fast as the broker takes it), `rate` (events per second) or `speedup` (event
time compressed by a factor). Malformed rows are counted and written, with their line and
reason, to an errors file (JSON Lines); `strict` stops at the first one instead.

The unit of work is the chunk: a source with a columnar `chunks()` (ML-100K) validates and
encodes thousands of rows per call, and the loop only hands bytes to librdkafka, whose queue
it keeps full. Any other source is encoded event by event into the same chunks.

Progress counts acknowledged events only: librdkafka's queue length says how many produced
messages still wait for the broker, so the bar never runs ahead of the log. A broker that
cannot be reached is one status ("broker unreachable, retrying (N s)"), not librdkafka's
line per connection attempt: its transport logs go to a filtered logger and its error
callback sets the status, which the next acknowledgement clears. librdkafka keeps retrying
(a message fails after `message.timeout.ms`, 5 minutes by default, and the replay then
raises `DeliveryError`).

Resuming: every `checkpoint_s` the loop waits, at a chunk boundary, until the broker has
acknowledged everything produced, and records the source position (rows read) in
`checkpoint_file`; an interrupted replay (Ctrl-C, an error) records the last position whose
events are all acknowledged. `resume_from` skips that many rows of the source, so a re-run
goes on where the log stopped. At most the chunk in flight when it stopped is produced twice,
and the events' ids are stable (a JSONL line's name and number, ML-100K's row), so every
processor downstream drops those copies by id.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import orjson
from confluent_kafka import KafkaError, Producer
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm import tqdm

from streamrec.infra.settings import Settings
from streamrec.streams import codecs
from streamrec.streams.errors import ReplayError
from streamrec.streams.producer import DeliveryTracker, bulk_producer, flush
from streamrec.streams.sources.base import EncodedChunk, RowError
from streamrec.topics import EVENTS_INTERACTIONS, Interaction, TopicSpec


class ReplayOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    since: datetime | None = Field(None, description="only events at or after this event time")
    until: datetime | None = Field(None, description="only events before this event time")
    pacing: Literal["max", "rate", "speedup"] = "max"
    rate: float | None = Field(None, gt=0)
    speedup: float | None = Field(None, gt=0)
    strict: bool = False
    errors_file: Path | None = None
    limit: int | None = Field(None, gt=0)
    progress: bool = True
    resume_from: int = Field(0, ge=0, description="skip the source's first N rows (resuming)")
    checkpoint_file: Path | None = Field(None, description="where the resume position goes")
    checkpoint_s: float = Field(2.0, gt=0, description="record the position this often")

    @model_validator(mode="after")
    def _pacing_has_its_number(self) -> ReplayOptions:
        if self.pacing == "rate" and self.rate is None:
            raise ValueError("pacing 'rate' needs rate (events/s)")
        if self.pacing == "speedup" and self.speedup is None:
            raise ValueError("pacing 'speedup' needs speedup (factor)")
        return self


@dataclass
class ReplayReport:
    source: str
    topic: str
    read: int = 0
    produced: int = 0
    malformed: int = 0
    outside_window: int = 0
    seconds: float = 0.0
    errors_file: Path | None = None
    skipped: int = 0  # rows of the source skipped when resuming
    acknowledged: int = 0  # events the broker acknowledged (at the last look)
    position: int = 0  # source rows whose events are all acknowledged: where to resume
    interrupted: bool = False

    @property
    def events_per_s(self) -> float:
        return self.produced / self.seconds if self.seconds else 0.0


class Checkpoint(BaseModel):
    """A replay's resume position: `position` rows of `source` are done (acknowledged)."""

    model_config = ConfigDict(extra="ignore")

    source: str
    topic: str
    position: int = Field(ge=0)
    acknowledged: int = Field(0, ge=0)
    done: bool = False
    updated_at: datetime

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.model_dump_json())
        tmp.replace(path)  # atomic: a crash leaves the old position or the new one

    @classmethod
    def load(cls, path: Path) -> Checkpoint | None:
        return cls.model_validate_json(path.read_text()) if path.exists() else None


log = logging.getLogger(__name__)
# librdkafka's own log lines (one per failed connection attempt, several a second while a
# broker is down) go here; the transport ones are summed up by `BrokerWatch` instead.
kafka_log = logging.getLogger("streamrec.replay.librdkafka")
_TRANSPORT_WORDS = ("connect", "disconnect", "brokers are down", "receive failed", "refused")


def _not_transport(record: logging.LogRecord) -> bool:
    text = record.getMessage().lower()
    return not any(word in text for word in _TRANSPORT_WORDS)


kafka_log.addFilter(_not_transport)


class BrokerWatch:
    """Whether the broker is reachable, from librdkafka's error callback: unreachable from
    the first transport error until the next acknowledgement (`progressed`)."""

    TRANSPORT = frozenset(
        {KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE}
    )

    def __init__(self) -> None:
        self.since: float | None = None
        self.outages = 0

    def on_error(self, err: KafkaError) -> None:
        if err.code() in self.TRANSPORT:
            if self.since is None:
                self.since = time.monotonic()
                self.outages += 1
                # Once per outage, and without librdkafka's text (one line per attempt).
                log.warning("broker unreachable, retrying (%s)", err.name())
        else:
            log.error("kafka: %s", err.str())

    def progressed(self) -> None:
        if self.since is not None:
            log.warning("broker reachable again after %.0f s", time.monotonic() - self.since)
            self.since = None

    def status(self) -> str | None:
        if self.since is None:
            return None
        return f"broker unreachable, retrying ({time.monotonic() - self.since:.0f} s)"


class _Pacer:
    """Holds production back to a rate or to event time divided by a speedup."""

    def __init__(self, options: ReplayOptions) -> None:
        self.options = options
        self.start = time.monotonic()
        self.first_ts: float | None = None
        self.count = 0

    def wait(self, ts: float) -> None:
        self.count += 1
        if self.options.pacing == "rate":
            due = self.start + self.count / self.options.rate  # type: ignore[operator]
        else:
            self.first_ts = ts if self.first_ts is None else self.first_ts
            due = self.start + (ts - self.first_ts) / self.options.speedup  # type: ignore[operator]
        delay = due - time.monotonic()
        if delay > 0.001:
            time.sleep(delay)  # pacing is the point here: hold the producer to the schedule


def _epoch(value: datetime | None) -> float | None:
    if value is None:
        return None
    # A bound without a zone is UTC, as every time of the contracts is.
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def encoded_chunks(
    source: Iterable[Interaction | RowError], topic: TopicSpec, size: int = 5_000
) -> Iterator[EncodedChunk]:
    """Any source of events, encoded a chunk at a time (one event at a time inside): the
    path of sources that have no columnar `chunks` of their own."""
    chunk = EncodedChunk([], [], np.empty(0))
    ts: list[float] = []
    for item in source:
        if isinstance(item, RowError):
            chunk.errors.append((len(chunk.values), item))
        else:
            chunk.keys.append(topic.key_of(item))
            chunk.values.append(codecs.encode(topic, item))
            ts.append(item.ts.timestamp())
        if len(chunk.values) + len(chunk.errors) >= size:
            chunk.ts = np.array(ts, dtype=float)
            yield chunk
            chunk, ts = EncodedChunk([], [], np.empty(0)), []
    if chunk.values or chunk.errors:
        chunk.ts = np.array(ts, dtype=float)
        yield chunk


class _Run:
    """One replay's producing loop over encoded chunks."""

    def __init__(
        self,
        producer: Producer,
        topic: TopicSpec,
        options: ReplayOptions,
        report: ReplayReport,
        failures: DeliveryTracker,
        watch: BrokerWatch,
        bar: tqdm,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.options = options
        self.report = report
        self.failures = failures
        self.watch = watch
        self.bar = bar
        self.pacer = _Pacer(options)
        self.since, self.until = _epoch(options.since), _epoch(options.until)
        self.errors_fh: BinaryIO | None = None
        self.done = False
        self.skip = options.resume_from
        report.position = options.resume_from
        # Source rows of the chunks handed whole to librdkafka (not yet all acknowledged).
        self.handed = options.resume_from
        self._next_tick = 0.0
        self._next_checkpoint = time.monotonic() + options.checkpoint_s
        self._desc = f"replay {report.source}"

    def chunk(self, chunk: EncodedChunk) -> None:
        start = 0
        for pos, error in chunk.errors:
            self.events(chunk, start, pos)
            if self.done:
                return
            self.error(error)
            start = pos
        self.events(chunk, start, len(chunk.values))

    def after_chunk(self) -> None:
        """At a chunk boundary: every row read so far is handed to librdkafka."""
        report = self.report
        self.handed = report.skipped + report.read
        self.tick()
        if time.monotonic() >= self._next_checkpoint:
            self.checkpoint()

    def error(self, item: RowError) -> None:
        report, options = self.report, self.options
        if self.skip:
            self.skip -= 1
            report.skipped += 1
            return
        report.read += 1
        if options.strict:
            raise ReplayError(f"{report.source} line {item.line}: {item.reason}")
        report.malformed += 1
        if options.errors_file is None:
            return
        if self.errors_fh is None:
            options.errors_file.parent.mkdir(parents=True, exist_ok=True)
            # A resumed run adds to the errors the interrupted one wrote.
            mode = "ab" if options.resume_from else "wb"
            self.errors_fh = open(options.errors_file, mode)  # noqa: SIM115
        self.errors_fh.write(
            orjson.dumps(
                {"source": report.source, "line": item.line, "reason": item.reason, "raw": item.raw}
            )
            + b"\n"
        )

    def events(self, chunk: EncodedChunk, start: int, end: int) -> None:
        if self.skip and start < end:
            n = min(self.skip, end - start)
            self.skip -= n
            self.report.skipped += n
            start += n
        if start >= end:
            return
        report, options = self.report, self.options
        ts = chunk.ts[start:end]
        inside = np.ones(len(ts), dtype=bool)
        if self.since is not None:
            inside &= ts >= self.since
        if self.until is not None:
            inside &= ts < self.until
        picked = np.flatnonzero(inside) + start
        read = end - start
        if options.limit is not None and len(picked) >= options.limit - report.produced:
            picked = picked[: options.limit - report.produced]
            self.done = True
            read = int(picked[-1]) + 1 - start if len(picked) else read
        report.read += read
        report.outside_window += read - len(picked)
        if options.pacing == "max":
            if len(picked) == end - start:
                self.produce(chunk.keys[start:end], chunk.values[start:end])
            else:
                keys, values = chunk.keys, chunk.values
                self.produce([keys[i] for i in picked], [values[i] for i in picked])
        else:
            # Paced: the position moves event by event (a chunk can take minutes here).
            base = report.skipped + report.read - read
            for i in picked.tolist():
                self.pacer.wait(float(chunk.ts[i]))
                self.produce([chunk.keys[i]], [chunk.values[i]])
                report.produced += 1
                self.handed = base + i + 1 - start
                self.tick()
                if time.monotonic() >= self._next_checkpoint:
                    self.checkpoint()
            return
        report.produced += len(picked)

    def produce(self, keys: list[bytes | None], values: list[bytes]) -> None:
        # The hot loop: one C call per event, no delivery callback per event (the
        # producer reports failures only), and librdkafka's queue kept full.
        produce, poll, name = self.producer.produce, self.producer.poll, self.topic.name
        for key, value in zip(keys, values, strict=True):
            try:
                produce(name, value, key)
            except BufferError:
                while True:
                    poll(0.05)  # local queue full: let deliveries drain, then retry
                    self.tick()
                    try:
                        produce(name, value, key)
                        break
                    except BufferError:
                        continue
        poll(0)

    def acknowledged(self, in_flight: int) -> int:
        """Events the broker acknowledged: produced, less those still queued or in flight
        (librdkafka's queue length) and those that failed."""
        produced = self.report.produced
        return max(0, produced - in_flight - self.failures.failed)

    def tick(self, force: bool = False) -> None:
        """Refresh the acknowledged count, the broker status and the bar (twice a second)."""
        now = time.monotonic()
        if not force and now < self._next_tick:
            return
        self._next_tick = now + 0.5
        report = self.report
        acked = self.acknowledged(len(self.producer))
        if acked > report.acknowledged:
            self.watch.progressed()
        report.acknowledged = max(report.acknowledged, acked)
        status = self.watch.status()
        self.bar.set_description_str(f"{self._desc}: {status}" if status else self._desc)
        # Done: rows skipped, rows that needed no acknowledgement, and acknowledged events.
        self.bar.n = report.skipped + (report.read - report.produced) + report.acknowledged
        self.bar.refresh()

    def drain(self, timeout_s: float | None = None) -> bool:
        """Wait until everything produced is acknowledged (True), showing the broker's
        status meanwhile; False if `timeout_s` passed first."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.producer.flush(0.5):
            self.tick(force=True)
            if self.failures.failed:
                return False  # given up by librdkafka (message.timeout.ms): not resumable here
            if deadline is not None and time.monotonic() >= deadline:
                return False
        self.tick(force=True)
        return not self.failures.failed

    def checkpoint(self, done: bool = False) -> None:
        """Record the position once everything handed over is acknowledged."""
        if not self.drain():
            return
        report = self.report
        report.position = self.handed
        report.acknowledged = report.produced
        self._next_checkpoint = time.monotonic() + self.options.checkpoint_s
        self.save(done)

    def save(self, done: bool = False) -> None:
        path = self.options.checkpoint_file
        if path is None:
            return
        report = self.report
        Checkpoint(
            source=report.source,
            topic=report.topic,
            position=report.position,
            acknowledged=report.acknowledged,
            done=done,
            updated_at=datetime.now(UTC),
        ).save(path)


def replay_producer(
    settings: Settings, failures: DeliveryTracker, watch: BrokerWatch | None = None
) -> Producer:
    """The bulk producer with only failed deliveries reported (to `failures`): once flush
    leaves nothing in flight, every message not reported failed was acknowledged, and no
    delivery report per message costs the producing thread anything. With `watch`, an
    unreachable broker is one status instead of a log line per connection attempt."""
    extra: dict[str, object] = {"delivery.report.only.error": True, "on_delivery": failures}
    if watch is not None:
        extra |= {"error_cb": watch.on_error, "logger": kafka_log}
    return bulk_producer(settings, **extra)


def replay(
    settings: Settings,
    source: Iterable[Interaction | RowError],
    source_name: str,
    options: ReplayOptions,
    topic: TopicSpec = EVENTS_INTERACTIONS,
    total: int | None = None,
) -> ReplayReport:
    report = ReplayReport(source=source_name, topic=topic.name, errors_file=options.errors_file)
    failures = DeliveryTracker()
    watch = BrokerWatch()
    producer = replay_producer(settings, failures, watch)
    columnar = getattr(source, "chunks", None)
    chunks = (
        columnar()
        if callable(columnar) and topic.schema is Interaction
        else encoded_chunks(source, topic)
    )
    started = time.monotonic()
    bar = tqdm(
        total=total,
        unit="ev",
        desc=f"replay {source_name}",
        initial=options.resume_from,
        disable=not options.progress,
        mininterval=0.5,
    )
    run = _Run(producer, topic, options, report, failures, watch, bar)
    try:
        for chunk in chunks:
            run.chunk(chunk)
            run.after_chunk()
            if run.done:
                break
        run.checkpoint(done=True)
        if not run.drain(60.0):
            flush(producer, 0.1)  # raises DeliveryError naming what is still unacknowledged
    except BaseException:
        # Interrupted (Ctrl-C, a failure): record the last position whose events are all
        # acknowledged, so that `resume_from` goes on from there.
        report.interrupted = True
        if run.drain(10.0):
            report.position, report.acknowledged = run.handed, report.produced
        run.save()
        raise
    finally:
        bar.close()
        if run.errors_fh is not None:
            run.errors_fh.close()
        report.seconds = time.monotonic() - started
    failures.raise_if_failed()
    return report
