"""What a replay source yields: validated events, or a row error with its line and reason."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RowError:
    line: int
    reason: str
    raw: str


def event_id_for(source: str, row: int) -> str:
    """Deterministic id of row `row` of `source`: replaying twice gives the same ids."""
    return f"{source}:{row}"
