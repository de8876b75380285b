"""The analytics store: clickhouse-connect over embedded chDB (`chdb://dir`) or a server (`http://`).

chDB runs in-process, so there is nothing to start; `status` checks the DSN answers SELECT 1.
"""

from __future__ import annotations

from typing import Any

from streamrec.errors import ConfigError
from streamrec.infra.settings import redact_url


def get_client(dsn: str) -> Any:
    """A clickhouse-connect client for `dsn`; errors name the DSN."""
    import clickhouse_connect  # heavy import: only where analytics is used

    if not dsn.startswith(("chdb://", "http://", "https://", "clickhouse://", "clickhousedb://")):
        raise ConfigError(
            f"unsupported ClickHouse DSN {redact_url(dsn)!r}: use chdb:///dir or http://host:8123"
        )
    return clickhouse_connect.get_client(dsn=dsn)


def ping(dsn: str) -> tuple[bool, str]:
    """(answers, detail) for `status`: the server version, or the error."""
    try:
        client = get_client(dsn)
        version = client.command("SELECT version()")
        ok = client.command("SELECT 1") == 1
        return ok, f"ClickHouse {version}"
    except Exception as exc:  # status reports any failure rather than raising
        return False, f"{type(exc).__name__}: {exc}"
