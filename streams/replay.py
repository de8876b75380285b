"""Replay: produce an event log to a topic, for backfills and demos.

The producer is confluent-kafka's (idempotent, acks=all, compressed, batched). Pacing is
`max` (as fast as the broker takes it), `rate` (events per second) or `speedup` (event
time compressed by a factor). Malformed rows are counted and written, with their line and
reason, to an errors file (JSON Lines); `strict` stops at the first one instead.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm import tqdm

from streamrec.infra.settings import Settings
from streamrec.streams.errors import ReplayError
from streamrec.streams.producer import DeliveryTracker, bulk_producer, flush, produce_event
from streamrec.streams.sources.base import RowError
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

    def wait(self, event: Interaction) -> None:
        self.count += 1
        if self.options.pacing == "max":
            return
        if self.options.pacing == "rate":
            due = self.start + self.count / self.options.rate  # type: ignore[operator]
        else:
            ts = event.ts.timestamp()
            self.first_ts = ts if self.first_ts is None else self.first_ts
            due = self.start + (ts - self.first_ts) / self.options.speedup  # type: ignore[operator]
        delay = due - time.monotonic()
        if delay > 0.001:
            time.sleep(delay)  # pacing is the point here: hold the producer to the schedule


def replay(
    settings: Settings,
    source: Iterable[Interaction | RowError],
    source_name: str,
    options: ReplayOptions,
    topic: TopicSpec = EVENTS_INTERACTIONS,
    total: int | None = None,
) -> ReplayReport:
    report = ReplayReport(source=source_name, topic=topic.name, errors_file=options.errors_file)
    producer = bulk_producer(settings)
    tracker = DeliveryTracker()
    pacer = _Pacer(options)
    errors_fh = None
    started = time.monotonic()
    bar = tqdm(
        total=total,
        unit="ev",
        desc=f"replay {source_name}",
        disable=not options.progress,
        mininterval=0.5,
    )
    try:
        for n, item in enumerate(source, start=1):
            report.read += 1
            if isinstance(item, RowError):
                if options.strict:
                    raise ReplayError(f"{source_name} line {item.line}: {item.reason}")
                report.malformed += 1
                if options.errors_file is not None:
                    if errors_fh is None:
                        options.errors_file.parent.mkdir(parents=True, exist_ok=True)
                        errors_fh = open(options.errors_file, "wb")  # noqa: SIM115
                    errors_fh.write(
                        orjson.dumps(
                            {
                                "source": source_name,
                                "line": item.line,
                                "reason": item.reason,
                                "raw": item.raw,
                            }
                        )
                        + b"\n"
                    )
            elif (options.since and item.ts < options.since) or (
                options.until and item.ts >= options.until
            ):
                report.outside_window += 1
            else:
                pacer.wait(item)
                produce_event(producer, topic, item, tracker)
                report.produced += 1
                if options.limit and report.produced >= options.limit:
                    break
            if n % 2000 == 0:
                producer.poll(0)
                bar.update(2000)
        bar.update(report.read - bar.n)
        flush(producer)
    finally:
        bar.close()
        if errors_fh is not None:
            errors_fh.close()
    report.seconds = time.monotonic() - started
    tracker.raise_if_failed()
    if tracker.delivered != report.produced:
        raise ReplayError(f"produced {report.produced} but {tracker.delivered} acknowledged")
    return report
