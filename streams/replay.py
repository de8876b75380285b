"""Replay: produce an event log to a topic, for backfills and demos.

The producer is confluent-kafka's (idempotent, acks=all, compressed, batched). Pacing is
`max` (as fast as the broker takes it), `rate` (events per second) or `speedup` (event
time compressed by a factor). Malformed rows are counted and written, with their line and
reason, to an errors file (JSON Lines); `strict` stops at the first one instead.

The unit of work is the chunk: a source with a columnar `chunks()` (ML-100K) validates and
encodes thousands of rows per call, and the loop only hands bytes to librdkafka, whose queue
it keeps full. Any other source is encoded event by event into the same chunks.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import orjson
from confluent_kafka import Producer
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

    @property
    def events_per_s(self) -> float:
        return self.produced / self.seconds if self.seconds else 0.0


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
        self, producer: Producer, topic: TopicSpec, options: ReplayOptions, report: ReplayReport
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.options = options
        self.report = report
        self.pacer = _Pacer(options)
        self.since, self.until = _epoch(options.since), _epoch(options.until)
        self.errors_fh: BinaryIO | None = None
        self.done = False

    def chunk(self, chunk: EncodedChunk) -> None:
        start = 0
        for pos, error in chunk.errors:
            self.events(chunk, start, pos)
            if self.done:
                return
            self.error(error)
            start = pos
        self.events(chunk, start, len(chunk.values))

    def error(self, item: RowError) -> None:
        report, options = self.report, self.options
        report.read += 1
        if options.strict:
            raise ReplayError(f"{report.source} line {item.line}: {item.reason}")
        report.malformed += 1
        if options.errors_file is None:
            return
        if self.errors_fh is None:
            options.errors_file.parent.mkdir(parents=True, exist_ok=True)
            self.errors_fh = open(options.errors_file, "wb")  # noqa: SIM115
        self.errors_fh.write(
            orjson.dumps(
                {"source": report.source, "line": item.line, "reason": item.reason, "raw": item.raw}
            )
            + b"\n"
        )

    def events(self, chunk: EncodedChunk, start: int, end: int) -> None:
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
            for i in picked.tolist():
                self.pacer.wait(float(chunk.ts[i]))
                self.produce([chunk.keys[i]], [chunk.values[i]])
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
                    try:
                        produce(name, value, key)
                        break
                    except BufferError:
                        continue
        poll(0)


def replay_producer(settings: Settings, failures: DeliveryTracker) -> Producer:
    """The bulk producer with only failed deliveries reported (to `failures`): once flush
    leaves nothing in flight, every message not reported failed was acknowledged, and no
    delivery report per message costs the producing thread anything."""
    return bulk_producer(settings, **{"delivery.report.only.error": True, "on_delivery": failures})


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
    producer = replay_producer(settings, failures)
    columnar = getattr(source, "chunks", None)
    chunks = (
        columnar()
        if callable(columnar) and topic.schema is Interaction
        else encoded_chunks(source, topic)
    )
    run = _Run(producer, topic, options, report)
    started = time.monotonic()
    bar = tqdm(
        total=total,
        unit="ev",
        desc=f"replay {source_name}",
        disable=not options.progress,
        mininterval=0.5,
    )
    try:
        for chunk in chunks:
            before = report.read
            run.chunk(chunk)
            bar.update(report.read - before)
            if run.done:
                break
        flush(producer)
    finally:
        bar.close()
        if run.errors_fh is not None:
            run.errors_fh.close()
    report.seconds = time.monotonic() - started
    failures.raise_if_failed()
    return report
