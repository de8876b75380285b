"""Redis clients from the settings: straight to `redis_url`, or to the primary the Sentinels
name.

Every process that talks to the online store builds its client here, so one setting
(`redis.sentinels`, or `stack.redis_sentinel` for the local stack) moves all of them onto
Sentinel. A Sentinel-made client asks the Sentinels for the primary when it connects and
again after a connection to it fails, so after a failover the same client object reaches the
promoted replica; commands sent while no primary answers fail with a `RedisError`, as they
do against a stopped server. The URL's database, user, password and TLS apply to the
primary's connections either way.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.sentinel import Sentinel

from streamrec.infra.settings import Settings

# Asking a Sentinel is one small round trip on loopback or a LAN; a Sentinel that does not
# answer within this is skipped for the next.
SENTINEL_TIMEOUT_S = 0.5


def connection_kwargs(url: str) -> dict[str, Any]:
    """The database, credentials and TLS of `url`, as redis-py connection arguments."""
    parsed = urlparse(url)
    kwargs: dict[str, Any] = {"db": int((parsed.path or "/0").lstrip("/") or 0)}
    if parsed.username:
        kwargs["username"] = unquote(parsed.username)
    if parsed.password:
        kwargs["password"] = unquote(parsed.password)
    if parsed.scheme == "rediss":
        kwargs["ssl"] = True
        ca = parse_qs(parsed.query).get("ssl_ca_certs")
        if ca:
            kwargs["ssl_ca_certs"] = ca[0]
    return kwargs


def sync_client(settings: Settings, **kwargs: Any) -> redis.Redis:
    """A blocking client; `kwargs` as for `redis.Redis` (timeouts, pool size)."""
    if not settings.redis_sentinels:
        return redis.Redis.from_url(settings.redis_url, **kwargs)
    return _primary(Sentinel, settings, kwargs)


def async_client(settings: Settings, **kwargs: Any) -> aioredis.Redis:
    """An asyncio client; `kwargs` as for `redis.asyncio.Redis`."""
    if not settings.redis_sentinels:
        return aioredis.from_url(settings.redis_url, **kwargs)
    return _primary(AsyncSentinel, settings, kwargs)


def _primary(sentinel_type: Any, settings: Settings, kwargs: dict[str, Any]) -> Any:
    """A client of the primary that redis-py's `sentinel_type` finds for the settings."""
    sentinel = sentinel_type(
        settings.redis_sentinels, sentinel_kwargs={"socket_timeout": SENTINEL_TIMEOUT_S}
    )
    return sentinel.master_for(
        settings.redis.sentinel_master, **connection_kwargs(settings.redis_url), **kwargs
    )
