"""Analytics errors, under `streamrec.errors.StreamRecError`.

AnalyticsError
├── StoreBusyError   the embedded chDB path is owned by another process
├── QueryError       ClickHouse refused a query or an insert
└── SinkStuck        the sink's inserts kept failing past its bound (the worker exits)
"""

from __future__ import annotations

from streamrec.errors import StreamRecError


class AnalyticsError(StreamRecError):
    """Something in analytics (ClickHouse, the report, the dashboard) failed."""


class StoreBusyError(AnalyticsError):
    """The embedded chDB directory is open in another process (one process owns a path)."""


class QueryError(AnalyticsError):
    """ClickHouse refused a query or an insert; the message names the table or query."""


class SinkStuck(AnalyticsError):
    """The sink's inserts failed for longer than `analytics.sink_give_up_s`: the worker ends
    with its batch uncommitted, to be restarted."""
