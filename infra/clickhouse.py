"""The analytics store: clickhouse-connect over embedded chDB (`chdb://dir`) or a server (`http://`).

chDB runs in-process, so there is nothing to start; `status` checks the DSN answers SELECT 1.
"""

from __future__ import annotations

from typing import Any

from streamrec.errors import ConfigError
from streamrec.infra.settings import Settings, redact_url


def credentials(settings: Settings) -> dict[str, str]:
    """The server user and password of the settings, as clickhouse-connect's arguments (none
    when unset: the DSN's own, or the server's default user)."""
    ch = settings.clickhouse
    out = {}
    if ch.username:
        out["username"] = ch.username
    if ch.password.get_secret_value():
        out["password"] = ch.password.get_secret_value()
    return out


def get_client(dsn: str, **credentials: str) -> Any:
    """A clickhouse-connect client for `dsn` (with `credentials()`); errors name the DSN."""
    import clickhouse_connect  # heavy import: only where analytics is used

    if not dsn.startswith(("chdb://", "http://", "https://", "clickhouse://", "clickhousedb://")):
        raise ConfigError(
            f"unsupported ClickHouse DSN {redact_url(dsn)!r}: use chdb:///dir or http://host:8123"
        )
    if dsn.startswith("chdb://"):
        credentials = {}  # embedded: no server, no login
    return clickhouse_connect.get_client(dsn=dsn, **credentials)


def ping(dsn: str, **credentials: str) -> tuple[bool, str]:
    """(answers, detail) for `status`: the server version, or the error."""
    try:
        client = get_client(dsn, **credentials)
        version = client.command("SELECT version()")
        ok = client.command("SELECT 1") == 1
        return ok, f"ClickHouse {version}"
    except Exception as exc:  # status reports any failure rather than raising
        return False, f"{type(exc).__name__}: {exc}"
