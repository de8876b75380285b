"""Redis: the online store and cache."""

from __future__ import annotations

import json
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

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
    # NoDecode: the environment may give "h1:26379,h2:26379" as well as JSON.
    sentinels: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated host:port of Redis Sentinels; when given, clients ask "
        "them for the primary of `sentinel_master` (the URL's host and port are then not "
        "used; its database, user, password and TLS are)",
    )
    sentinel_master: str = Field("streamrec", description="the name the Sentinels monitor")

    @field_validator("sentinels", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)  # as `Settings.to_env` writes a list
            return [a.strip() for a in value.split(",") if a.strip()]
        return value

    @field_validator("sentinels")
    @classmethod
    def _host_and_port(cls, value: list[str]) -> list[str]:
        for address in value:
            host, _, port = address.rpartition(":")
            if not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"a sentinel is host:port, not {address!r}")
        return value
