"""Analytics errors, under `streamrec.errors.StreamRecError`.

AnalyticsError
├── StoreBusyError   the embedded chDB path is owned by another process
└── QueryError       ClickHouse refused a query or an insert
"""

from __future__ import annotations

from streamrec.errors import StreamRecError


class AnalyticsError(StreamRecError):
    """Something in analytics (ClickHouse, the report, the dashboard) failed."""


class StoreBusyError(AnalyticsError):
    """The embedded chDB directory is open in another process (one process owns a path)."""


class QueryError(AnalyticsError):
    """ClickHouse refused a query or an insert; the message names the table or query."""
