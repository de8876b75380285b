"""What a replay source yields: validated events, or a row error with its line and reason."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class RowError:
    line: int
    reason: str
    raw: str


def event_id_for(source: str, row: int) -> str:
    """Deterministic id of row `row` of `source`: replaying twice gives the same ids."""
    return f"{source}:{row}"


@dataclass
class EncodedChunk:
    """A run of source rows, already validated and encoded for the topic.

    `keys`, `values` and `ts` (event time, epoch seconds) describe the chunk's events in
    order; `errors` are its rows that failed, each with the number of the chunk's events
    that come before it, so a replay keeps the source's order (and `strict` stops exactly
    where the per-row path would).
    """

    keys: list[bytes | None]
    values: list[bytes]
    ts: np.ndarray
    errors: list[tuple[int, RowError]] = field(default_factory=list)
