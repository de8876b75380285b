"""Event logs in StreamRec's own interaction schema: JSON Lines or Parquet.

A row without `event_id` gets a deterministic one from the file name and line (or row)
number. Every invalid row is yielded as a `RowError` with its line and reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
from pydantic import ValidationError

from streamrec.streams.codecs import validation_reason
from streamrec.streams.sources.base import RowError, event_id_for
from streamrec.topics import Interaction


def _validate(obj: object, name: str, line: int, raw: str) -> Interaction | RowError:
    if not isinstance(obj, dict):
        return RowError(line, f"expected a JSON object, got {type(obj).__name__}", raw)
    obj.setdefault("event_id", event_id_for(name, line))
    try:
        return Interaction.model_validate(obj)
    except ValidationError as exc:
        return RowError(line, validation_reason(exc), raw)


class JsonLinesSource:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.name

    def __iter__(self) -> Iterator[Interaction | RowError]:
        with open(self.path, "rb") as fh:
            for line_no, raw in enumerate(fh, start=1):
                text = raw.decode("utf-8", errors="replace").rstrip("\n")
                if not text.strip():
                    continue
                try:
                    obj = orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    yield RowError(line_no, f"invalid JSON: {exc}", text)
                    continue
                yield _validate(obj, self.name, line_no, text)


class ParquetSource:
    """Rows are numbered from 1 in file order (the 'line' of an error is that row number)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.name

    def __iter__(self) -> Iterator[Interaction | RowError]:
        import pyarrow.parquet as pq

        row = 0
        for batch in pq.ParquetFile(self.path).iter_batches(batch_size=10_000):
            for obj in batch.to_pylist():
                row += 1
                clean = {k: v for k, v in obj.items() if v is not None}
                yield _validate(clean, self.name, row, repr(obj))


def open_event_log(path: Path) -> JsonLinesSource | ParquetSource:
    if path.suffix == ".parquet":
        return ParquetSource(path)
    return JsonLinesSource(path)
