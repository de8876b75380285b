"""An Arrow block of interactions stores exactly the rows the row insert stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from streamrec.analytics import schema
from streamrec.analytics.columns import ColumnBlock, from_events
from streamrec.analytics.store import store_session
from streamrec.infra.settings import Settings
from streamrec.processors.analytics_sink import ChdbTables
from streamrec.topics import Interaction

pytestmark = [pytest.mark.integration]


def test_arrow_and_row_inserts_store_the_same_rows(tmp_path):
    start = datetime(2026, 3, 1, 12, tzinfo=UTC)
    events = [
        Interaction(
            event_id=f"e{i}",
            user_id=f"u{i % 7}",
            item_id=f"i{i}",
            kind="rating" if i % 2 else "view",
            rating=(i % 11) / 2 if i % 2 else None,
            ts=start + timedelta(microseconds=1234 * i),
            source="ml-100k" if i % 3 else "app",
        )
        for i in range(300)
    ]
    settings = Settings().with_overrides(stack={"state_dir": tmp_path})
    with store_session(settings) as client:
        schema.ensure_tables(client, "by_arrow")
        rows = [schema.interaction_row(e) for e in events]
        schema.insert(client, settings.clickhouse.database, schema.INTERACTIONS, rows)
        block = ColumnBlock()
        block.add(from_events(events))
        ChdbTables(client, "by_arrow").insert(schema.INTERACTIONS, block)
        query = "SELECT * FROM {}.interactions FINAL ORDER BY event_id"
        by_rows = client.query(query.format(settings.clickhouse.database)).result_rows
        by_arrow = client.query(query.format("by_arrow")).result_rows
    assert len(by_rows) == 300
    assert by_arrow == by_rows
