"""Opening the analytics store: a clickhouse-connect client with the tables in place.

chDB is ClickHouse inside the calling process, and one process can own one chDB directory
at a time (a second process gets "Error initializing EmbeddedServer"; one process cannot
open two directories either). The analytics sink owns the default `chdb://<state>/clickhouse`
while it runs; `streamrec report` opens it when the sink is stopped, or any time when the DSN
is a ClickHouse server (ADR 0051). This module turns the ownership error into a clear
`StoreBusyError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from streamrec.analytics.errors import StoreBusyError
from streamrec.analytics.schema import ensure_tables
from streamrec.infra.clickhouse import credentials, get_client
from streamrec.infra.settings import Settings


def open_store(settings: Settings, create: bool = True) -> Any:
    """A client on `settings.clickhouse_dsn` with the analytics tables created."""
    dsn = settings.clickhouse_dsn
    try:
        client = get_client(dsn, **credentials(settings))
    except Exception as exc:  # clickhouse-connect raises ProgrammingError for chDB ownership
        if dsn.startswith("chdb://") and "EmbeddedServer" in str(exc):
            raise StoreBusyError(
                f"the embedded ClickHouse at {dsn} is open in another process (the analytics "
                "sink owns it while it runs): stop `streamrec worker analytics-sink`, or set "
                "STREAMREC_CLICKHOUSE__DSN to a ClickHouse server"
            ) from exc
        raise
    if create:
        ensure_tables(client, settings.clickhouse.database)
    return client


@contextmanager
def store_session(settings: Settings, create: bool = True) -> Iterator[Any]:
    """`open_store` that closes the client at the end (closing releases a chDB directory)."""
    client = open_store(settings, create=create)
    try:
        yield client
    finally:
        client.close()
