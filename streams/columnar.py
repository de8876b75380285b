"""Columnar encoding of `Interaction` values, byte for byte what `codecs.encode` writes.

Replay encodes whole chunks of rows at once: Arrow joins the JSON text column by column,
so Python touches each event only to hand its bytes to librdkafka. The layout below is
pydantic-core's serialisation of `topics.Interaction` (field order, separators, float and
datetime formats); `tests/unit/streams/test_columnar.py` compares the two on every kind of
value this encoder accepts. Rows it cannot vouch for (strings that JSON would escape, too
long or empty, numbers outside the fast forms) are left to the schema, one by one.
"""

from __future__ import annotations

import numpy as np
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
