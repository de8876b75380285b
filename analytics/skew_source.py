"""Where the skew check's two sides are read: the registry and Redis.

The training side is the promoted ranker's `feature_profile.json` (the registry); the
serving side is the hash `streamrec:skew:{version}` the serving processes write
(`serving/skew_sampler.py`). `read_skew` joins them into a `SkewReport` with the thresholds
of `analytics.skew_*`; `streamrec report`, `streamrec models skew-report` and the dashboard
all come through here.
"""

from __future__ import annotations

import logging

import redis
from pydantic import ValidationError

from streamrec.analytics.skew import SkewReport, SkewSample, check, merge, skew_key
from streamrec.infra.settings import Settings
from streamrec.models.feature_profile import load_profile
from streamrec.models.registry import ModelRegistry, RegistryError

log = logging.getLogger(__name__)
RANKER = "ranker"


def serving_samples(client: redis.Redis, version: str) -> list[SkewSample]:
    out = []
    for raw in client.hgetall(skew_key(version)).values():
        try:
            out.append(SkewSample.model_validate_json(raw))
        except ValidationError as exc:  # another release's field: skip it, say so
            log.warning("skew sample not read: %s", exc)
    return out


def read_skew(settings: Settings, client: redis.Redis, version: str | None = None) -> SkewReport:
    """The skew report of `version` (default: the promoted ranker). Raises RedisError."""
    cfg = settings.analytics
    registry = ModelRegistry(settings)
    profile = None
    if version is None:
        promoted = registry.promoted(RANKER)
        version = promoted.version if promoted is not None else None
        path = promoted.path if promoted is not None else None
    else:
        try:
            path = registry.get(RANKER, version, verify=False).path
        except RegistryError:
            path = None
    if path is not None:
        profile = load_profile(path)
    samples = serving_samples(client, version) if version is not None else []
    merged = merge(samples, version) if samples and version is not None else None
    return check(
        profile,
        merged,
        version,
        cfg.skew_psi_warn,
        cfg.skew_psi_drift,
        cfg.skew_min_samples,
        workers=len(samples),
    )
