"""What every settings section shares, and how secrets are shown."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, SecretStr

MASK = "**********"


class Section(BaseModel):
    """One area's settings: frozen, and an unknown key is an error rather than ignored."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def redact_url(url: str) -> str:
    """`url` safe to print: the password and the query (which can carry tokens) masked.

    Anything that is not a URL with a host is masked whole: it may be a bare secret."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return MASK
    if not parts.scheme or not host:
        return MASK if url else ""
    auth = parts.username or ""
    if parts.password is not None:
        auth += f":{MASK}"
    host = f"[{host}]" if ":" in host else host
    netloc = (f"{auth}@" if auth else "") + host + (f":{port}" if port else "")
    query = f"?{MASK}" if parts.query else ""
    return f"{parts.scheme}://{netloc}{parts.path}{query}"


def shown(value: object) -> str:
    """A setting's value as logs and the CLI print it: a secret never appears."""
    if isinstance(value, SecretStr):
        secret = value.get_secret_value()
        # DSNs keep their scheme, host and port visible: that is what an operator checks.
        return redact_url(secret) if "://" in secret else (MASK if secret else "")
    return str(value)
