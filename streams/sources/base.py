"""What a replay source yields: validated events, or a row error with its line and reason."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from streamrec.topics import Interaction


@dataclass(frozen=True)
class RowError:
    line: int
    reason: str
    raw: str


class EventSource(Protocol):
    """A finite, ordered log of interactions; `name` prefixes deterministic event ids."""

    name: str

    def __iter__(self) -> Iterator[Interaction | RowError]: ...


def event_id_for(source: str, row: int) -> str:
    """Deterministic id of row `row` of `source`: replaying twice gives the same ids."""
    return f"{source}:{row}"
