"""Authentication and rate limits of the serving API and the request topic."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from streamrec.infra.settings.base import Section

Priority = Literal["interactive", "prefetch", "background"]


class AuthSettings(Section):
    """Who may ask (API keys, JWTs), how often (rate limits), and what stays open."""

    mode: Literal["on", "off"] = Field(
        "on",
        description="on: every /v1/ request needs an API key or a JWT; off: anyone may ask, "
        "as anything (the local demo, tests and benchmarks set it explicitly)",
    )
    metrics_open: bool = Field(
        True, description="false: /metrics needs a service key or token like /v1/"
    )
    # JWTs (RS256 / ES256), verified with the keys of a JWKS
    jwks_file: str = Field("", description="a JWKS JSON file; empty: none")
    jwks_url: str = Field("", description="a JWKS URL (fetched when a token names a new kid)")
    jwt_audience: str = Field("", description="required `aud` of tokens; empty: not checked")
    jwt_issuer: str = Field("", description="required `iss` of tokens; empty: not checked")
    jwt_service_scope: str = Field(
        "recs:service", description="a token whose `scope` holds this may ask for any user"
    )
    jwt_service_priority: Priority = "interactive"
    token_cache_max: int = Field(
        100_000, ge=1, description="verified tokens held until they expire"
    )
    # rate limits: token buckets shared in Redis, leased in small grants (ADR 0096)
    key_rate_per_s: float = Field(100.0, gt=0, description="per API key or token subject")
    key_burst: float = Field(200.0, ge=1)
    user_rate_per_s: float = Field(
        10.0, ge=0, description="per user asked for, whoever asks; 0: no per-user limit"
    )
    user_burst: float = Field(20.0, ge=1)
    principal_rate_per_s: float = Field(
        100.0, gt=0, description="per producer principal of the request topic"
    )
    principal_burst: float = Field(200.0, ge=1)
    lease_share: float = Field(
        0.05,
        gt=0,
        le=1,
        description="share of a bucket's burst one process takes from Redis at a time: a "
        "Redis call per lease, not per request",
    )
    processes: int = Field(
        0,
        ge=0,
        description="serving processes sharing the limits, for the fallback when Redis is "
        "down (each then allows limit / processes locally); 0: serving.workers",
    )
    first_use_window_ms: float = Field(
        10.0,
        ge=0,
        description="a bucket new to this process (a user's first request) passes at once; "
        "its token is taken from Redis within this window, in one call for all such first "
        "uses; 0: every new bucket asks Redis before its request passes",
    )
    redis_retry_s: float = Field(
        1.0, gt=0, description="after a failed Redis call, the local share is used this long"
    )
    keys_fetch_wait_ms: int = Field(
        100, ge=1, description="fetch.wait.max.ms of the auth.keys follower (revocation delay)"
    )
