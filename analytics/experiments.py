"""A/B assignment: a stable hash of (experiment, user) picks the variant.

The same user always lands in the same variant of an experiment, in every process and
across restarts (no state, no coordination), and different experiments split users
independently. Serving calls `variant_for(settings, user_id)` to fill `Impression.variant`;
the report reads the variant back from ClickHouse.

A ranker canary (`canary_bucket`) uses the same hash; its users are variant "canary".

Buckets: the first 8 bytes of SHA-256("<experiment>:<user_id>") modulo 10,000, split
evenly between the variants in order (Python's `hash()` is salted per process, so never it).
"""

from __future__ import annotations

import hashlib

from streamrec.errors import ConfigError
from streamrec.infra.settings import Settings

BUCKETS = 10_000


def bucket(user_id: str, experiment: str) -> int:
    """The user's bucket in [0, BUCKETS) for this experiment."""
    digest = hashlib.sha256(f"{experiment}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def assign_variant(user_id: str, experiment: str, variants: tuple[str, ...]) -> str:
    """The variant of `user_id` in `experiment`: equal shares, stable for ever."""
    if not variants:
        raise ConfigError(f"experiment {experiment!r} has no variants")
    return variants[bucket(user_id, experiment) * len(variants) // BUCKETS]


def variants_of(settings: Settings) -> tuple[str, ...]:
    """The configured variants (`analytics.variants`, comma-separated; first is control)."""
    return tuple(v.strip() for v in settings.analytics.variants.split(",") if v.strip())


def variant_for(settings: Settings, user_id: str) -> str:
    """The user's variant in the configured experiment (what serving puts on impressions)."""
    return assign_variant(user_id, settings.analytics.experiment, variants_of(settings))


# A ranker canary splits users by the same hash, in an experiment of its own per version, so
# that a share that grows (5% -> 25%) keeps every user it had: the canary's users are the
# buckets below share x BUCKETS. Their impressions carry this variant instead of the
# configured experiment's.
CANARY_VARIANT = "canary"


def canary_bucket(user_id: str, version: str) -> int:
    """The user's bucket in the canary of ranker `version`."""
    return bucket(user_id, f"canary:{version}")


def canary_limit(share: float) -> int:
    """Buckets below this are the canary's users."""
    return round(share * BUCKETS)
