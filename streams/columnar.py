"""Columnar encoding of `Interaction` values, byte for byte what `codecs.encode` writes,
and the batch decoding of consumed values into plain rows (`decode_interaction_rows`).

Replay encodes whole chunks of rows at once: Arrow joins the JSON text column by column,
so Python touches each event only to hand its bytes to librdkafka. The layout below is
pydantic-core's serialisation of `topics.Interaction` (field order, separators, float and
datetime formats); `tests/unit/streams/test_columnar.py` compares the two on every kind of
value this encoder accepts. Rows it cannot vouch for (strings that JSON would escape, too
long or empty, numbers outside the fast forms) are left to the schema, one by one.
"""

from __future__ import annotations

import operator
from datetime import datetime
from typing import Any, get_args

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pydantic_core

from streamrec.topics import Interaction

# What pydantic-core writes before each field, in the schema's field order.
_FIELDS = tuple(Interaction.model_fields)
assert _FIELDS == (
    "schema_version",
    "event_id",
    "user_id",
    "item_id",
    "kind",
    "rating",
    "ts",
    "source",
), f"Interaction's fields changed ({_FIELDS}); update the columnar encoder"
_MAX_ID = 128  # Interaction's max_length for event_id, user_id and item_id


def plain_ids(column: pa.Array) -> np.ndarray:
    """Which values are ids this encoder writes verbatim: 1-128 ASCII letters or digits,
    which JSON never escapes and the schema always accepts."""
    alnum = pc.ascii_is_alnum(column).to_numpy(zero_copy_only=False)
    length = pc.binary_length(column).to_numpy(zero_copy_only=False)
    return alnum & (length <= _MAX_ID)


def _float_texts(values: np.ndarray) -> pa.Array:
    # pydantic-core's own float text for each distinct value (a handful: ratings).
    uniq, inverse = np.unique(values, return_inverse=True)
    texts = [
        "null" if np.isnan(v) else pydantic_core.to_json(float(v)).decode() for v in uniq.tolist()
    ]
    return pa.array(texts, pa.string()).take(pa.array(inverse.astype(np.int64)))


def _utc_texts(epoch_s: np.ndarray) -> pa.Array:
    # "YYYY-MM-DD HH:MM:SS" from Arrow's cast, in pydantic's ISO form "YYYY-MM-DDTHH:MM:SSZ".
    stamps = pa.array(epoch_s.astype(np.int64), pa.int64()).cast(pa.timestamp("s"))
    return pc.replace_substring(stamps.cast(pa.string()), " ", "T", max_replacements=1)


def encode_interactions(
    event_ids: pa.Array,
    user_ids: pa.Array,
    item_ids: pa.Array,
    ratings: np.ndarray,
    epoch_s: np.ndarray,
    kind: str,
    source: str,
) -> list[bytes]:
    """JSON values of interactions given as columns (ratings NaN = None, times in whole
    epoch seconds from 1970 to 2286). The caller has checked the ids with `plain_ids`."""
    head = '{"schema_version":1,"event_id":'
    joined = pc.binary_join_element_wise(
        head + '"',
        event_ids,
        '","user_id":"',
        user_ids,
        '","item_id":"',
        item_ids,
        '","kind":' + pydantic_core.to_json(kind).decode() + ',"rating":',
        _float_texts(ratings),
        ',"ts":"',
        _utc_texts(epoch_s),
        'Z","source":' + pydantic_core.to_json(source).decode() + "}",
        "",
    )
    return joined.cast(pa.binary()).to_pylist()


# The decoding side: a consumed batch of `Interaction` values to plain rows, for the
# processors that consume events.interactions a batch at a time (the session worker).
_ALL = _FIELDS
_GET_ALL = operator.itemgetter(*_ALL)
_KINDS = frozenset(get_args(Interaction.model_fields["kind"].annotation))
_DEFAULT_KIND = Interaction.model_fields["kind"].default
_DEFAULT_SOURCE = Interaction.model_fields["source"].default
_MAX_SOURCE = 64
# Time forms whose meaning is plain: second precision or up to microseconds, UTC.
_TS = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|\+00:00)?$"
_ZONE = r"(?:Z|\+00:00)$"

# (event_id, user_id, item_id, rating, ts in epoch ms): what the schema gives for a value,
# with the time as `features.session.ts_ms(interaction.ts.timestamp())` computes it.
InteractionRow = tuple[str, str, str, float | None, int]


def interaction_row(event: Interaction) -> InteractionRow:
    """The row of an event decoded by the schema (the same values the batch path gives)."""
    return (
        event.event_id,
        event.user_id,
        event.item_id,
        event.rating,
        round(event.ts.timestamp() * 1000),
    )


def plain_interaction(d: Any) -> bool:
    """One parsed value is an object the schema plainly accepts (its time's shape is checked
    for the batch, in Arrow)."""
    if type(d) is not dict or not d.keys() <= _ALL_SET:
        return False
    for name in ("event_id", "user_id", "item_id"):
        v = d.get(name)
        if type(v) is not str or not 0 < len(v) <= _MAX_ID:
            return False
    if type(d.get("ts")) is not str:
        return False
    version = d.get("schema_version", 1)
    if type(version) is not int or version != 1:
        return False
    kind = d.get("kind", _DEFAULT_KIND)
    if type(kind) is not str or kind not in _KINDS:
        return False
    rating = d.get("rating")
    if rating is not None and (type(rating) not in (int, float) or not 0 <= rating <= 10):
        return False
    source = d.get("source", _DEFAULT_SOURCE)
    return type(source) is str and len(source) <= _MAX_SOURCE


_ALL_SET = frozenset(_ALL)


def plain_columns(parsed: list[Any]) -> list[tuple[Any, ...]] | None:
    """The columns of a batch in which every value is an object with exactly the schema's
    fields, each column plainly valid (what StreamRec's own producers write); None as soon
    as one value is not (then each is checked alone)."""
    try:
        if set(map(len, parsed)) != {len(_ALL)}:  # None, or a field missing or extra
            return None
        cols = list(zip(*map(_GET_ALL, parsed), strict=True))
    except (TypeError, KeyError):  # not an object, or another field in place of one of ours
        return None
    c = dict(zip(_ALL, cols, strict=True))
    for name in ("event_id", "user_id", "item_id"):
        col = c[name]
        if (
            set(map(type, col)) != {str}
            or not 0 < min(map(len, col)) <= max(map(len, col)) <= _MAX_ID
        ):
            return None
    version, kind, rating, source = c["schema_version"], c["kind"], c["rating"], c["source"]
    if set(map(type, version)) != {int} or set(version) != {1}:
        return None
    if set(map(type, kind)) != {str} or not set(kind) <= _KINDS:
        return None
    if set(map(type, source)) != {str} or max(map(len, source)) > _MAX_SOURCE:
        return None
    if not set(map(type, rating)) <= {type(None), int, float}:
        return None
    numbers = [r for r in rating if r is not None]
    if numbers and not 0 <= min(numbers) <= max(numbers) <= 10:
        return None
    if set(map(type, c["ts"])) != {str}:
        return None
    return cols


def _epoch_ms(texts: list[str]) -> tuple[list[int], list[int]]:
    """Epoch ms of each time text (already of a plain shape) as `ts_ms(datetime.timestamp())`
    gives it, and the positions Arrow could not read (an invalid date such as Feb 30)."""
    naive = pc.replace_substring_regex(pa.array(texts, pa.string()), _ZONE, "")
    try:
        micros = naive.cast(pa.timestamp("us")).cast(pa.int64()).to_numpy()
        bad: list[int] = []
    except pa.ArrowInvalid:
        bad, good = [], []
        for i, t in enumerate(texts):
            try:
                datetime.fromisoformat(t)
                good.append(i)
            except ValueError:
                bad.append(i)
        micros = np.zeros(len(texts), dtype=np.int64)
        if good:
            keep = naive.take(pa.array(good, pa.int64())).cast(pa.timestamp("us"))
            micros[good] = keep.cast(pa.int64()).to_numpy()
    # The same float steps as `round((us / 10**6) * 1000)`: exact int64 -> float64 (below
    # 2**53), a correctly rounded division, and round-half-even.
    ms = np.rint((micros.astype(np.float64) / 1e6) * 1000.0).astype(np.int64)
    return ms.tolist(), bad


def decode_interaction_rows(
    values: list[bytes | None],
) -> tuple[list[InteractionRow | None], list[int]]:
    """Rows of a batch of events.interactions values, in the batch's order, and the positions
    this path does not vouch for (their row is None): the caller decodes each of those
    through the schema, which accepts it (another time offset, an epoch number...) or
    dead-letters it with its reason. orjson parses each value on its own (never a joined
    array, where one crafted value could spill into its neighbour); the checks accept only
    what the schema accepts, and the rows hold the values the schema would give."""
    n = len(values)
    parsed: list[Any] = []
    loads = orjson.loads
    for v in values:
        try:
            parsed.append(loads(v) if v is not None else None)
        except orjson.JSONDecodeError:
            parsed.append(None)
    cols = plain_columns(parsed) if n else None
    if cols is not None:
        c = dict(zip(_ALL, cols, strict=True))
        plain = list(range(n))
        eids, uids, iids, ratings, ts_text = (
            c["event_id"],
            c["user_id"],
            c["item_id"],
            c["rating"],
            c["ts"],
        )
    else:
        plain = [i for i, d in enumerate(parsed) if plain_interaction(d)]
        rows = [parsed[i] for i in plain]
        eids = [d["event_id"] for d in rows]
        uids = [d["user_id"] for d in rows]
        iids = [d["item_id"] for d in rows]
        ratings = [d.get("rating") for d in rows]
        ts_text = [d["ts"] for d in rows]
    out: list[InteractionRow | None] = [None] * n
    if not plain:
        return out, list(range(n))
    # The time's shape for the whole batch (RE2 in Arrow), then its value.
    shaped = pc.match_substring_regex(pa.array(ts_text, pa.string()), _TS)
    ok = shaped.to_numpy(zero_copy_only=False)
    if not ok.all():
        keep = np.flatnonzero(ok).tolist()
        plain = [plain[k] for k in keep]
        eids, uids, iids, ratings, ts_text = (
            [col[k] for k in keep] for col in (eids, uids, iids, ratings, ts_text)
        )
    ms, unreadable = _epoch_ms(list(ts_text)) if plain else ([], [])
    # The schema's float: an integer rating is a float there.
    ratings = [r if r is None or type(r) is float else float(r) for r in ratings]
    drop = set(unreadable)
    for k, row in enumerate(zip(eids, uids, iids, ratings, ms, strict=True)):
        if k not in drop:
            out[plain[k]] = row
    return out, [i for i in range(n) if out[i] is None]
