"""Redis: the online store and cache."""

from __future__ import annotations

from pydantic import Field, SecretStr

from streamrec.infra.settings.base import Section


class RedisSettings(Section):
    """Online store and cache; `url` empty means the local stack's redis-server."""

    url: SecretStr = Field(
        SecretStr(""), description="redis://[user:password@]host:port/db; a secret (password)"
    )
    socket_timeout_s: float = 0.25
