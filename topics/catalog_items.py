"""catalog.items: the catalog as a stream of item upserts and removals (latest per item)."""

from typing import Literal

from pydantic import Field

from streamrec.topics.base import FOREVER, Event, TopicSpec, UtcDatetime, utcnow


class CatalogItem(Event):
    """One item's current metadata, or its removal (`op="remove"`)."""

    schema_version: Literal[1] = 1
    item_id: str = Field(min_length=1, max_length=128)
    op: Literal["upsert", "remove"] = "upsert"
    title: str = Field("", max_length=1000)
    year: int | None = Field(None, ge=1870, le=2100)
    genres: list[str] = Field(default_factory=list)
    description: str | None = Field(None, max_length=10_000)
    popularity_hint: float = Field(0.0, ge=0.0, description="higher is embedded first")
    updated_at: UtcDatetime = Field(default_factory=utcnow)


CATALOG_ITEMS = TopicSpec(
    name="catalog.items",
    schema=CatalogItem,
    key_field="item_id",
    description="item upserts and removals; compacted to the latest state per item",
    partitions=3,
    cleanup_policy="compact",
    retention_ms=FOREVER,
)
