"""catalog.vectors: each item's content embedding (latest per item; tombstone on removal).

The value is binary, not JSON: see `streams.codecs.encode_vector`.
"""

from typing import Literal

from pydantic import Field

from streamrec.topics.base import FOREVER, Event, TopicSpec


class ItemVector(Event):
    """An item's embedding and what produced it."""

    model_config = Event.model_config | {"arbitrary_types_allowed": True}

    schema_version: Literal[1] = 1
    item_id: str = Field(min_length=1, max_length=128)
    model_version: str
    content_hash: str
    dtype: Literal["float32", "float16"] = "float32"
    vector: bytes = Field(description="raw little-endian floats of `dtype`")

    @property
    def dim(self) -> int:
        return len(self.vector) // (4 if self.dtype == "float32" else 2)


CATALOG_VECTORS = TopicSpec(
    name="catalog.vectors",
    schema=ItemVector,
    key_field="item_id",
    description="item embeddings; compacted; a null value (tombstone) removes the item",
    partitions=3,
    cleanup_policy="compact",
    retention_ms=FOREVER,
    value_format="vector",
)
