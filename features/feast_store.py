"""Feast, configured from our settings: the one place a `feast.FeatureStore` is built.

Responsibilities:
- read `features/feature_repo/feature_store.yaml` (project, provider, store types) and fill in
  what depends on the environment from `Settings`: the Redis connection string, the
  registry path and the repo path (`<state dir>/features/`, where offline Parquet lives);
- `apply`: register the objects of `features/feature_repo/definitions.py` (idempotent);
- translate Feast and Redis errors into `features.errors.FeatureStoreError`.

Readers and writers (`features.online`, processors, the backfill) get their store here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from feast import FeatureStore, RepoConfig

from streamrec.features.errors import FeatureStoreError
from streamrec.infra.redis_clients import connection_kwargs
from streamrec.infra.settings import Settings, redact_url

REPO_DIR = Path(__file__).parent / "feature_repo"
YAML_FILE = REPO_DIR / "feature_store.yaml"


def features_dir(settings: Settings) -> Path:
    """The Feast repo path at run time: registry and offline Parquet files."""
    return settings.state_dir / "features"


def offline_dir(settings: Settings) -> Path:
    return features_dir(settings) / "offline"


def redis_connection_string(redis_url: str, hosts: str | None = None) -> str:
    """`redis://host:port/db` (our settings) as Feast's `host:port,db=N[,password=..]`;
    `hosts` (Sentinels' `h:p,h:p`) in place of the URL's host. Feast hands every key=value on
    to redis.Redis, so the ACL user and the TLS CA travel too."""
    url = urlparse(redis_url)
    if url.scheme not in ("redis", "rediss") or not url.hostname:
        raise FeatureStoreError(f"cannot use {redact_url(redis_url)!r} as Feast's online store")
    options = [
        f"{k}={str(v).lower() if isinstance(v, bool) else v}"
        for k, v in connection_kwargs(redis_url).items()
    ]
    return ",".join([hosts or f"{url.hostname}:{url.port or 6379}", *options])


def repo_config(settings: Settings) -> RepoConfig:
    raw: dict[str, Any] = yaml.safe_load(YAML_FILE.read_text())
    repo_path = features_dir(settings)
    raw["online_store"] = {
        **raw["online_store"],
        "connection_string": redis_connection_string(settings.redis_url),
    }
    if settings.redis_sentinels:
        # Feast's own Sentinel client: it hands the URL's options to the primary's connections.
        addresses = ",".join(f"{h}:{p}" for h, p in settings.redis_sentinels)
        raw["online_store"] |= {
            "redis_type": "redis_sentinel",
            "sentinel_master": settings.redis.sentinel_master,
            "connection_string": redis_connection_string(settings.redis_url, addresses),
        }
    registry = dict(raw["registry"])
    registry["path"] = str(repo_path / registry["path"])
    raw["registry"] = registry
    try:
        config = RepoConfig(**raw)
    except Exception as exc:  # pydantic ValidationError from Feast's config models
        raise FeatureStoreError(f"{YAML_FILE}: {exc}") from exc
    config.repo_path = repo_path
    return config


def feature_store(settings: Settings) -> FeatureStore:
    """A FeatureStore over our Redis and the state dir (creates the directories it needs)."""
    offline_dir(settings).mkdir(parents=True, exist_ok=True)
    try:
        return FeatureStore(config=repo_config(settings))
    except FeatureStoreError:
        raise
    except Exception as exc:
        raise FeatureStoreError(f"cannot open the feature store: {exc}") from exc


def apply(settings: Settings, store: FeatureStore | None = None) -> list[str]:
    """Register every entity, source, view and service; returns the names applied."""
    from streamrec.features.feature_repo import definitions as d

    store = store or feature_store(settings)
    objects = [*d.ENTITIES, *d.DATA_SOURCES, *d.FEATURE_VIEWS, *d.FEATURE_SERVICES]
    try:
        store.apply(objects)
    except Exception as exc:
        raise FeatureStoreError(f"feast apply failed: {exc}") from exc
    return [o.name for o in objects]
