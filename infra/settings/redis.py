"""Redis: the online store and cache."""

from __future__ import annotations

from pydantic import Field, SecretStr

from streamrec.infra.settings.base import Section


class RedisSettings(Section):
    """Online store and cache; `url` empty means the local stack's redis-server.

    `username`/`password` make every client log in as that ACL user (and `streamrec up`
    create it, with the default user disabled); `tls` makes clients speak TLS (`rediss://`)
    and `up` start redis-server with a TLS port only. Both apply to the local stack's URL; a
    `url` given whole carries its own."""

    url: SecretStr = Field(
        SecretStr(""), description="redis://[user:password@]host:port/db; a secret (password)"
    )
    socket_timeout_s: float = 0.25
    username: str = Field("", description="ACL user; empty: the default user")
    password: SecretStr = Field(SecretStr(""), description="ACL user's password; a secret")
    tls: bool = Field(False, description="TLS to redis-server (rediss://)")
    ca_file: str = Field("", description="PEM CA for TLS; empty: the CA `up` generated")
