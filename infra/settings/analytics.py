"""Analytics: the ClickHouse store, the sink, reports, metrics and the dashboard."""

from __future__ import annotations

from pydantic import Field, SecretStr

from streamrec.infra.settings.base import Section


class ClickHouseSettings(Section):
    """Analytics store: a DSN for clickhouse-connect; empty means embedded chDB in the state dir."""

    dsn: SecretStr = Field(
        SecretStr(""), description="http://user:password@host:8123 or chdb:///dir; a secret"
    )
    database: str = "streamrec"
    # Given apart from the DSN so that a password never has to be URL-escaped into it.
    username: str = Field("", description="server user; empty: the DSN's (or default)")
    password: SecretStr = Field(SecretStr(""), description="server user's password; a secret")


class AnalyticsSettings(Section):
    """The ClickHouse sink, reports, metrics endpoints and the dashboard."""

    batch_size: int = Field(5000, ge=1, description="sink: rows per ClickHouse insert at most")
    batch_max_wait_s: float = Field(1.0, gt=0, description="sink: flush a partial batch after")
    sink_stuck_s: float = Field(
        30.0, gt=0, description="sink: inserts failing this long mark the worker stuck (/readyz)"
    )
    sink_give_up_s: float = Field(
        120.0,
        gt=0,
        description="sink: inserts failing this long end the worker (exit 75) to be restarted",
    )
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(0, ge=0, description="every worker's /metrics; 0 = a free port")
    heartbeat_interval_s: float = Field(2.0, gt=0, description="worker registry refresh")
    heartbeat_ttl_s: int = Field(8, ge=1, description="a worker silent this long is missing")
    stopped_ttl_s: int = Field(
        86_400, ge=1, description="a worker that stopped cleanly shows as stopped this long"
    )
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
    skew_psi_warn: float = Field(
        0.1, gt=0, description="ranker train/serve skew: a feature's PSI from here is amber"
    )
    skew_psi_drift: float = Field(
        0.25, gt=0, description="ranker train/serve skew: a feature's PSI from here is drift"
    )
    skew_min_samples: int = Field(
        1_000, ge=1, description="ranker train/serve skew: serving rows needed to judge a feature"
    )
    experiment: str = Field("ranker-v1", description="the running A/B experiment's name")
    variants: str = Field("control,treatment", description="comma-separated; first = control")
