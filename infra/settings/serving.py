"""The serving worker."""

from __future__ import annotations

from pydantic import Field

from streamrec.infra.settings.base import Section


class ServingSettings(Section):
    """The serving worker: budgets, bounds, breakers, batching, cache."""

    host: str = "127.0.0.1"
    port: int = 18000
    workers: int = Field(
        1,
        ge=1,
        description="serving processes on one host: each binds the port with SO_REUSEPORT and "
        "joins the request topic's group (one per core; ADR 0093)",
    )
    reuse_port: bool = Field(
        False,
        description="bind the HTTP port with SO_REUSEPORT and serve in this process: set by "
        "the supervisor of `workers` > 1 processes for each of them",
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
        "score (the ranker hurts them: BENCHMARKS.md's cold-start table); 0: always the ranker",
    )
    max_body_bytes: int = 16_384
    max_header_bytes: int = Field(8_192, ge=1024, description="all header names and values; 431")
    max_query_bytes: int = Field(2_048, ge=256, description="the query string; 414")
    # admission: requests ranked at once, and bounded waiting room per priority class
    max_in_flight: int = 64
    admission: bool = Field(
        True,
        description="false: no admission bound and no front door, so nothing is shed and no "
        "Retry-After is sent. For comparison only: scenarios' naive mode (ADR 0094)",
    )
    fallback: bool = Field(
        True,
        description="false: a member whose features or candidates read failed (store down, "
        "late, breaker open) is answered with the error (HTTP 500) instead of the fallback "
        "chain's lower level. For comparison only: scenarios' naive mode (ADR 0115)",
    )
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
    batch_wait_when_idle: bool = Field(
        True,
        description="wait batch_max_wait_ms for company even when no batch is running; "
        "false: a request that finds the worker idle starts its batch at once (the next "
        "batch fills while it runs, so under load batches still grow). One A/B run each "
        "(BENCHMARKS.md, 'Idle start of a batch') did not settle it: the default stays",
    )
    batch_running: int = Field(
        2,
        ge=1,
        description="request batches in flight at once (one in Redis while one ranks); "
        "while that many run, arrivals join the next batch, so batches grow with the load",
    )
    device: str = Field("auto", description="auto: cuda when torch sees one, else cpu")
    ranker_threads: int = Field(
        0,
        ge=0,
        description="torch threads of the ranker in each process; 0: the cores this process "
        "may run on, divided by workers, minus one for the event loop (at least 1)",
    )
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
    # re-ranking, and explanations (cached LLM text or a template; one MGET of the
    # final items' keys under a 20 ms cap)
    max_genre_share: float = 0.4
    # exploration: catalog coverage from a rotation held in memory (ADR 0126)
    explore_slots: int = Field(
        0,
        ge=0,
        description="the last slots of an answer (never its first item) given to the live "
        "catalog items this process has shown least, marked `explored`; 0: off",
    )
    explore_variants: str = Field(
        "treatment",
        description="comma-separated A/B variants (analytics.variants) whose users get "
        "explore_slots; the others are the control without exploration",
    )
    explain: bool = True
    explain_llm_inline: bool = Field(
        False,
        description="call the LLM for each answer's top item on the request path and wait "
        "for it (ADR 0062 keeps it off the path). For comparison only: scenarios' naive mode "
        "(ADR 0094)",
    )
    # the optional shadow model: a registry version scored beside the promoted one
    shadow_version: str = ""
    shadow_sample: float = 0.1
    shadow_report_s: float = Field(
        5.0, gt=0, description="how often the shadow comparison's summary goes to Redis"
    )
    # train/serve skew: the promoted ranker's inputs counted into its training bins (ADR 0131)
    skew_sample: float = Field(
        0.05,
        ge=0,
        le=1,
        description="share of ranked batches whose features are counted for the skew check "
        "(every 1/share-th batch, on a thread after the answer is out); 0: off",
    )
    skew_report_s: float = Field(
        5.0, gt=0, description="how often the skew counts go to Redis (streamrec:skew:*)"
    )
    # the request topic
    consumer_group: str = "streamrec-serving"
    reply_topics: str = Field(
        "recs.responses*",
        pattern=r"[^,\s]",
        description="comma-separated glob patterns (fnmatch, case-sensitive) a request's "
        "reply_to must match; any other request is dead-lettered: a client must not write "
        "into another topic",
    )
    topic_concurrency: int = 256
    topic_fetch_wait_ms: int = Field(
        500,
        ge=1,
        description="fetch.wait.max.ms of the request consumer and of topic clients' reply "
        "consumers: how long the broker may hold an empty fetch (a message ends the wait at "
        "once; 5 ms cost the idle broker ~15% of a core: ADR 0089)",
    )

    @property
    def reply_patterns(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.reply_topics.split(",") if p.strip())
