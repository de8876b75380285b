from datetime import UTC, datetime

import numpy as np
import pytest

from streamrec.streams import codecs
from streamrec.topics import (
    ALL_TOPICS,
    BY_NAME,
    CATALOG_ITEMS,
    CATALOG_VECTORS,
    EVENTS_INTERACTIONS,
    Interaction,
    ItemVector,
)
from streamrec.topics.errors import SchemaError


def test_topic_names_are_unique_and_every_design_topic_exists():
    names = [t.name for t in ALL_TOPICS]
    assert len(names) == len(set(names))
    for required in (
        "catalog.items",
        "catalog.vectors",
        "events.interactions",
        "candidates",
        "cache.invalidations",
        "recs.requests",
        "recs.responses",
        "recs.served",
        "llm.enrich.requests",
        "llm.enrich.results",
        "dead.letters",
    ):
        assert required in BY_NAME


def test_latest_state_topics_are_compacted_and_logs_are_not():
    for name in (
        "catalog.items",
        "catalog.vectors",
        "candidates",
        "llm.enrich.results",
        "registry.changes",
    ):
        assert "compact" in BY_NAME[name].config()["cleanup.policy"], name
    assert BY_NAME["events.interactions"].config()["cleanup.policy"] == "delete"


def test_every_schema_is_versioned_and_keyed_by_a_real_field():
    for spec in ALL_TOPICS:
        assert "schema_version" in spec.schema.model_fields, spec.name
        if spec.key_field is not None:
            assert spec.key_field in spec.schema.model_fields, spec.name


def _interaction(**kw):
    base = dict(
        event_id="s:1",
        user_id="7",
        item_id="42",
        kind="rating",
        rating=4.0,
        ts=datetime(1998, 1, 1, tzinfo=UTC),
    )
    return Interaction(**{**base, **kw})


def test_json_round_trip_and_key():
    event = _interaction()
    raw = codecs.encode(EVENTS_INTERACTIONS, event)
    assert codecs.decode(EVENTS_INTERACTIONS, raw) == event
    assert EVENTS_INTERACTIONS.key_of(event) == b"7"


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"not json", "Invalid JSON"),
        (b'{"event_id": "x"}', "user_id: Field required"),
        (
            b'{"schema_version": 2, "event_id": "e", "user_id": "u", "item_id": "i", '
            b'"ts": "2020-01-01T00:00:00Z"}',
            "schema_version",
        ),
        (None, "tombstone"),
    ],
)
def test_malformed_values_give_a_reason(raw, fragment):
    with pytest.raises(SchemaError) as err:
        codecs.decode(EVENTS_INTERACTIONS, raw)
    assert fragment in err.value.reason


def test_encode_refuses_an_event_of_another_schema():
    with pytest.raises(SchemaError):
        codecs.encode(CATALOG_ITEMS, _interaction())


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_vectors_are_compact_binary(dtype):
    vec = np.random.default_rng(0).standard_normal(384).astype(np.float32)
    event = ItemVector(
        item_id="1",
        model_version="m1",
        content_hash="h",
        dtype=dtype,
        vector=codecs.vector_bytes(vec, dtype),
    )
    raw = codecs.encode(CATALOG_VECTORS, event)
    width = 4 if dtype == "float32" else 2
    assert len(raw) < 384 * width + 200  # header is small; no JSON list of floats
    back = codecs.decode(CATALOG_VECTORS, raw)
    assert back.dim == 384
    np.testing.assert_allclose(codecs.vector_to_numpy(back), vec, rtol=1e-3, atol=1e-3)


def test_corrupt_vector_is_rejected():
    with pytest.raises(SchemaError, match="magic"):
        codecs.decode_vector(b"JUNKJUNK")
    with pytest.raises(SchemaError, match="tombstone"):
        codecs.decode_vector(None)
