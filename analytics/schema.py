"""The analytics tables: DDL, and the row each topic's event becomes.

Tables are ReplacingMergeTree whose sorting key ends with the event's identity, so a
redelivered event (same id, same content) collapses into one row; every read uses `FINAL`
(ADR 0050). Sorting keys follow the report's queries:

- `interactions`: one row per interaction, ORDER BY (user_id, ts, event_id): clicks are
  looked up per user after an impression;
- `impressions`: one row per recs.served impression, ORDER BY (served_at, event_id):
  per-minute traffic, latency and levels, CTR and coverage read time ranges; `principal` is
  the audit trail (which key or token subject asked: docs/security.md has the query);
- `catalog`: one row per item (latest `updated_at` wins), ORDER BY item_id: coverage's
  denominator (live items).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from streamrec.topics import CatalogItem, Impression, Interaction

INTERACTIONS = "interactions"
IMPRESSIONS = "impressions"
CATALOG = "catalog"

COLUMNS: dict[str, tuple[str, ...]] = {
    INTERACTIONS: ("event_id", "user_id", "item_id", "kind", "rating", "ts", "source"),
    IMPRESSIONS: (
        "event_id",
        "request_id",
        "user_id",
        "item_ids",
        "level",
        "model_version",
        "variant",
        "channel",
        "latency_ms",
        "served_at",
        "principal",
    ),
    CATALOG: ("item_id", "removed", "title", "genres", "updated_at"),
}

_DDL = {
    INTERACTIONS: """
        CREATE TABLE IF NOT EXISTS {db}.interactions (
            event_id String,
            user_id String,
            item_id String,
            kind LowCardinality(String),
            rating Nullable(Float32),
            ts DateTime64(3, 'UTC'),
            source LowCardinality(String)
        ) ENGINE = ReplacingMergeTree
        ORDER BY (user_id, ts, event_id)
    """,
    IMPRESSIONS: """
        CREATE TABLE IF NOT EXISTS {db}.impressions (
            event_id String,
            request_id String,
            user_id String,
            item_ids Array(String),
            level LowCardinality(String),
            model_version Nullable(String),
            variant LowCardinality(String),
            channel LowCardinality(String),
            latency_ms Float64,
            served_at DateTime64(3, 'UTC'),
            principal LowCardinality(String) DEFAULT ''
        ) ENGINE = ReplacingMergeTree
        ORDER BY (served_at, event_id)
    """,
    CATALOG: """
        CREATE TABLE IF NOT EXISTS {db}.catalog (
            item_id String,
            removed UInt8,
            title String,
            genres Array(String),
            updated_at DateTime64(3, 'UTC')
        ) ENGINE = ReplacingMergeTree(updated_at)
        ORDER BY item_id
    """,
}


# Columns added after their table: (table, column, type with its default).
_ADDED_COLUMNS = ((IMPRESSIONS, "principal", "LowCardinality(String) DEFAULT ''"),)


def ensure_tables(client: Any, database: str) -> None:
    """Create the database and the tables when missing (idempotent)."""
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    for ddl in _DDL.values():
        client.command(ddl.format(db=database))
    # Tables made before a column existed get it (old rows read its default).
    for table, column, kind in _ADDED_COLUMNS:
        client.command(f"ALTER TABLE {database}.{table} ADD COLUMN IF NOT EXISTS {column} {kind}")


def utc_naive(value: datetime) -> datetime:
    """UTC without tzinfo: clickhouse-connect converts aware datetimes ~7x slower (measured)."""
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def interaction_row(e: Interaction) -> list[Any]:
    return [e.event_id, e.user_id, e.item_id, e.kind, e.rating, utc_naive(e.ts), e.source]


def impression_row(e: Impression) -> list[Any]:
    return [
        e.event_id,
        e.request_id,
        e.user_id,
        list(e.item_ids),
        e.level,
        e.model_version,
        e.variant,
        e.channel,
        e.latency_ms,
        utc_naive(e.served_at),
        e.principal,
    ]


def catalog_row(e: CatalogItem) -> list[Any]:
    return [e.item_id, int(e.op == "remove"), e.title, list(e.genres), utc_naive(e.updated_at)]


def insert(client: Any, database: str, table: str, rows: list[list[Any]]) -> None:
    """Insert rows of `table` (the sink, tests and benchmarks share this one path)."""
    client.insert(table, rows, column_names=list(COLUMNS[table]), database=database)
