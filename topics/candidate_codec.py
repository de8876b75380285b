"""The stored form of a `CandidateList` (`cand:{user_id}`): compact binary, read in microseconds.

Layout (little endian), version 1:

    b"CL\\x01\\x00"          magic and format version
    u32 H, H bytes          JSON header: schema_version, user_id, model_version, computed_at,
                            sources (the names the masks index, in the order the list first
                            names them), n (number of candidates), ids_bytes
    n x f64                 scores, best first
    n x u16                 sources of each candidate, a bit per name in `sources`
    ids_bytes bytes         the n item ids, UTF-8, joined by U+001F (unit separator)

A candidate's sources come back in the order of `sources` (fusion names them in one order
for the whole list, so its lists round-trip exactly).

Responsibilities:
- `encode` a validated `CandidateList`; item ids holding the separator and lists naming more
  than 16 sources are refused (`SchemaError`), never stored half readable;
- `decode` to a validated `CandidateList` (writers, invalidation, tests, the demo);
- `read_ranked`: only what the request path needs (item ids, scores, model version), without
  building 500 pydantic models, with every length checked against the header;
- values written as JSON before this format (a list's TTL is 7 days) are still read.

Why not JSON (ADR 0048): in a py-spy profile of the serving worker at 80 requests/s, reading
the 500 candidates (a 40 KB JSON document, validated through a narrow pydantic view) was the
largest item of the event loop's own work, ~23% of its samples. This layout is ~10 KB for 500
candidates and its hot read is one small JSON header, one `numpy.frombuffer` and one split.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import numpy as np
import orjson
from pydantic import ValidationError

from streamrec.topics.errors import SchemaError
from streamrec.topics.stores import MAX_CANDIDATES, Candidate, CandidateList

MAGIC = b"CL\x01\x00"
SEP = "\x1f"
MAX_SOURCES = 16
_SEP_BYTES = SEP.encode()
_LEN = struct.Struct("<I")


class RankedCandidates(NamedTuple):
    """What the request path reads of a stored list: aligned ids and scores, best first."""

    item_ids: list[str]
    scores: list[float]
    model_version: str


def encode(value: CandidateList) -> bytes:
    sources = list(dict.fromkeys(s for c in value.items for s in c.sources))
    if len(sources) > MAX_SOURCES:
        raise SchemaError(f"a candidate list names {len(sources)} sources (at most 16)")
    bit = {name: 1 << i for i, name in enumerate(sources)}
    ids = [c.item_id for c in value.items]
    if any(SEP in i for i in ids):
        raise SchemaError("an item id holds U+001F, the stored list's separator")
    joined = SEP.join(ids).encode()
    header = orjson.dumps(
        {
            "schema_version": value.schema_version,
            "user_id": value.user_id,
            "model_version": value.model_version,
            "computed_at": value.computed_at.isoformat(),
            "sources": sources,
            "n": len(ids),
            "ids_bytes": len(joined),
        }
    )
    scores = np.fromiter((c.score for c in value.items), dtype="<f8", count=len(ids))
    masks = np.fromiter(
        (sum(bit[s] for s in set(c.sources)) for c in value.items), dtype="<u2", count=len(ids)
    )
    return b"".join(
        (
            MAGIC,
            _LEN.pack(len(header)),
            header,
            scores.tobytes(),
            masks.tobytes(),
            joined,
        )
    )


def _header(raw: bytes) -> tuple[dict, int, int, int]:
    """(header, where the scores start, n, where the ids start), the lengths checked; raises
    ValueError, KeyError, TypeError or struct.error when malformed."""
    if raw[:4] != MAGIC:
        raise ValueError("not a stored candidate list (magic)")
    (size,) = _LEN.unpack_from(raw, 4)
    start = 8 + size
    header = orjson.loads(raw[8:start])
    n, ids_bytes = header["n"], header["ids_bytes"]
    if not isinstance(n, int) or not isinstance(ids_bytes, int) or n < 0:
        raise ValueError(f"bad counts {n!r}, {ids_bytes!r}")
    end = start + 10 * n
    if len(raw) != end + ids_bytes:
        raise ValueError(f"{len(raw)} bytes where its header says {end + ids_bytes}")
    return header, start, n, end


def _parts(raw: bytes) -> tuple[dict, np.ndarray, np.ndarray, list[str]]:
    """(header, scores, masks, ids), every length checked; SchemaError when malformed."""
    try:
        header, start, n, end = _header(raw)
        scores = np.frombuffer(raw, dtype="<f8", count=n, offset=start)
        masks = np.frombuffer(raw, dtype="<u2", count=n, offset=start + 8 * n)
        ids = raw[end:].decode().split(SEP) if n else []
        if len(ids) != n:
            raise ValueError(f"{len(ids)} item ids for {n} candidates")
    except (ValueError, KeyError, TypeError, struct.error) as exc:  # orjson's error is a ValueError
        raise SchemaError(f"invalid stored CandidateList: {exc}") from None
    return header, scores, masks, ids


def decode(raw: bytes) -> CandidateList:
    """The validated `CandidateList` (a value stored as JSON before this format, too)."""
    try:
        if raw[:1] == b"{":
            return CandidateList.model_validate_json(raw)
        header, scores, masks, ids = _parts(raw)
        names = header["sources"]
        return CandidateList(
            schema_version=header["schema_version"],
            user_id=header["user_id"],
            model_version=header["model_version"],
            computed_at=header["computed_at"],
            items=[
                Candidate(
                    item_id=item,
                    score=score,
                    sources=[name for b, name in enumerate(names) if mask >> b & 1],
                )
                for item, score, mask in zip(ids, scores.tolist(), masks.tolist(), strict=True)
            ],
        )
    except (ValidationError, KeyError, TypeError) as exc:
        raise SchemaError(f"invalid stored CandidateList: {exc}") from None


def read_ranked(raw: bytes) -> RankedCandidates:
    """Item ids, scores and model version, checked, without building the models."""
    if raw[:1] == b"{":
        value = decode(raw)
        return RankedCandidates(
            [c.item_id for c in value.items], [c.score for c in value.items], value.model_version
        )
    header, scores, _, ids = _parts(raw)
    version = header.get("model_version")
    if header.get("schema_version") != 1 or not isinstance(version, str):
        raise SchemaError("invalid stored CandidateList: header")
    if len(ids) > MAX_CANDIDATES:
        raise SchemaError(f"invalid stored CandidateList: {len(ids)} candidates")
    return RankedCandidates(ids, scores.tolist(), version)


class RankedBatch(NamedTuple):
    """Many stored lists read at once: member m's candidates are
    `item_ids[offsets[m]:offsets[m + 1]]` and `scores[offsets[m]:offsets[m + 1]]` (best first);
    `found[m]` is False where nothing was stored, `errors[m]` holds the reason a member's
    value did not decode (its slice is then empty)."""

    item_ids: list[str]
    scores: np.ndarray
    offsets: np.ndarray
    model_versions: list[str]
    found: list[bool]
    errors: list[SchemaError | None]

    def member(self, m: int) -> tuple[list[str], np.ndarray]:
        lo, hi = int(self.offsets[m]), int(self.offsets[m + 1])
        return self.item_ids[lo:hi], self.scores[lo:hi]


def read_ranked_many(raws: list[bytes | None]) -> RankedBatch:
    """`read_ranked` of many stored lists in one pass: a small JSON header per member, then
    ONE `numpy.frombuffer` over all members' scores and ONE decode and split over all their
    ids, so no step costs Python per candidate. A member whose value is malformed fails
    alone (`errors`), exactly where `read_ranked` raises."""
    n_members = len(raws)
    counts = np.zeros(n_members, dtype=np.int64)
    versions = [""] * n_members
    found = [raw is not None for raw in raws]
    errors: list[SchemaError | None] = [None] * n_members
    score_parts: list[bytes] = []
    id_parts: list[bytes] = []
    legacy: dict[int, RankedCandidates] = {}
    for m, raw in enumerate(raws):
        if raw is None:
            continue
        try:
            if raw[:1] == b"{":  # stored as JSON before this format
                legacy[m] = read_ranked(raw)
                counts[m] = len(legacy[m].item_ids)
                versions[m] = legacy[m].model_version
                score_parts.append(np.asarray(legacy[m].scores, dtype="<f8").tobytes())
                continue
            header, start, n, end = _layout(raw)
        except SchemaError as exc:
            errors[m] = exc
            continue
        counts[m], versions[m] = n, header["model_version"]
        score_parts.append(raw[start : start + 8 * n])
        if n:
            id_parts.append(raw[end:])
    offsets = np.zeros(n_members + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    scores = np.frombuffer(b"".join(score_parts), dtype="<f8")
    try:
        binary_ids = _SEP_BYTES.join(id_parts).decode().split(SEP) if id_parts else []
    except UnicodeDecodeError:
        return _one_by_one(raws)  # some member's ids are not UTF-8: find which
    item_ids: list[str] = []
    taken = 0
    for m in range(n_members):
        if m in legacy:
            item_ids.extend(legacy[m].item_ids)
        elif counts[m]:
            item_ids.extend(binary_ids[taken : taken + counts[m]])
            taken += int(counts[m])
    return RankedBatch(item_ids, scores, offsets, versions, found, errors)


def _layout(raw: bytes) -> tuple[dict, int, int, int]:
    """(header, where the scores start, n, where the ids start) of a binary value, with the
    checks `read_ranked` makes except the split of the ids (the caller counts those)."""
    try:
        header, start, n, end = _header(raw)
    except (ValueError, KeyError, TypeError, struct.error) as exc:
        raise SchemaError(f"invalid stored CandidateList: {exc}") from None
    if header.get("schema_version") != 1 or not isinstance(header.get("model_version"), str):
        raise SchemaError("invalid stored CandidateList: header")
    if n > MAX_CANDIDATES:
        raise SchemaError(f"invalid stored CandidateList: {n} candidates")
    if n and raw.count(_SEP_BYTES, end) != n - 1:
        raise SchemaError(f"invalid stored CandidateList: item ids for {n} candidates")
    return header, start, n, end


def _one_by_one(raws: list[bytes | None]) -> RankedBatch:
    """The slow, exact form of `read_ranked_many`: each member through `read_ranked`."""
    lists: list[RankedCandidates | None] = []
    errors: list[SchemaError | None] = []
    for raw in raws:
        try:
            lists.append(read_ranked(raw) if raw is not None else None)
            errors.append(None)
        except SchemaError as exc:
            lists.append(None)
            errors.append(exc)
    counts = [len(r.item_ids) if r is not None else 0 for r in lists]
    offsets = np.zeros(len(raws) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return RankedBatch(
        [i for r in lists if r is not None for i in r.item_ids],
        np.asarray([s for r in lists if r is not None for s in r.scores], dtype=np.float64),
        offsets,
        [r.model_version if r is not None else "" for r in lists],
        [raw is not None for raw in raws],
        errors,
    )
