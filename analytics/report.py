"""`streamrec report`: what was served and what was clicked, computed in ClickHouse.

Responsibilities: the report's queries, its pydantic model and the CTR confidence interval.
Definitions (also in ADR 0052):

- **request**: one impression on recs.served (one per answered request; answers shed with
  503 are not impressions and are not counted here, serving's metrics count them).
- **latency percentiles**: `quantileExactInclusive` of the impression's `latency_ms` per
  minute (linear interpolation between order statistics, as numpy's default).
- **click**: an interaction of kind click, watch, like, purchase or rating by the impression's
  user on one of the impression's items, at or after `served_at` and less than
  `analytics.click_window_s` later. An impression is *clicked* when it has at least one click.
- **CTR** per variant: clicked impressions / impressions, with a 95% Wilson score interval
  (impressions treated as independent trials; a user's impressions are correlated, so the
  interval is optimistic for heavy users).
- **coverage**: live catalog items (latest state not removed) served at least once in the
  window / live catalog items. The seed requirement is 95% per week.

All reads use FINAL, so redelivered rows are counted once (ADR 0050).

The report's last section, the ranker's train/serve skew, is not from ClickHouse: the CLI
reads it from the registry and Redis (`analytics/skew_source.py`) and sets `Report.skew`.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

from pydantic import BaseModel, Field

from streamrec.analytics.errors import QueryError
from streamrec.analytics.skew import SkewReport
from streamrec.analytics.skew import render as render_skew
from streamrec.infra.settings import Settings
from streamrec.topics.recs_responses import Level

CLICK_KINDS: tuple[str, ...] = ("click", "watch", "like", "purchase", "rating")
LEVELS: tuple[str, ...] = get_args(Level)
COVERAGE_TARGET = 0.95
Z95 = 1.959963984540054


class MinuteStats(BaseModel):
    minute: datetime
    requests: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    levels: dict[str, int] = Field(description="impressions per degradation level")


class VariantCTR(BaseModel):
    variant: str
    impressions: int
    clicks: int = Field(description="impressions with at least one click in the window")
    ctr: float
    ci_low: float
    ci_high: float


class Coverage(BaseModel):
    catalog_items: int
    served_items: int
    share: float | None = Field(description="None when the catalog table is empty")
    target: float = COVERAGE_TARGET

    @property
    def meets_target(self) -> bool:
        return self.share is not None and self.share >= self.target


class Report(BaseModel):
    since: datetime
    until: datetime
    click_window_s: int
    per_minute: list[MinuteStats]
    variants: list[VariantCTR]
    coverage: Coverage
    skew: SkewReport | None = Field(
        None, description="the promoted ranker's train/serve skew; None when not read"
    )


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion ((0, 0) with no trials)."""
    if trials == 0:
        return 0.0, 0.0
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _ts(value: datetime) -> str:
    value = value.astimezone(UTC)
    return f"toDateTime64('{value.strftime('%Y-%m-%d %H:%M:%S.%f')[:-3]}', 3, 'UTC')"


class ReportBuilder:
    """Runs the report's queries on a clickhouse-connect client (chDB or a server)."""

    def __init__(self, client: Any, settings: Settings) -> None:
        self.client = client
        self.db = settings.clickhouse.database
        self.click_window_s = settings.analytics.click_window_s
        self.window_s = settings.analytics.report_window_s

    def _rows(self, sql: str) -> list[tuple[Any, ...]]:
        try:
            return list(self.client.query(sql).result_rows)
        except Exception as exc:  # translate clickhouse-connect/chDB errors at the boundary
            raise QueryError(f"report query failed: {exc}\n{sql}") from exc

    def build(self, until: datetime | None = None, minutes: int = 15) -> Report:
        until = until or datetime.now(UTC)
        since = until - timedelta(seconds=self.window_s)
        return Report(
            since=since,
            until=until,
            click_window_s=self.click_window_s,
            per_minute=self.per_minute(until - timedelta(minutes=minutes), until),
            variants=self.ctr(since, until),
            coverage=self.coverage(since, until),
        )

    def per_minute(self, since: datetime, until: datetime) -> list[MinuteStats]:
        where = f"served_at >= {_ts(since)} AND served_at < {_ts(until)}"
        stats = self._rows(
            f"""
            SELECT toStartOfMinute(served_at) AS minute, count(),
                   quantileExactInclusive(0.5)(latency_ms),
                   quantileExactInclusive(0.95)(latency_ms),
                   quantileExactInclusive(0.99)(latency_ms)
            FROM {self.db}.impressions FINAL WHERE {where}
            GROUP BY minute ORDER BY minute"""
        )
        levels: dict[datetime, dict[str, int]] = {}
        for minute, level, n in self._rows(
            f"""
            SELECT toStartOfMinute(served_at) AS minute, level, count()
            FROM {self.db}.impressions FINAL WHERE {where}
            GROUP BY minute, level"""
        ):
            levels.setdefault(minute, {})[level] = n
        return [
            MinuteStats(
                minute=m.replace(tzinfo=UTC) if m.tzinfo is None else m,
                requests=n,
                p50_ms=p50,
                p95_ms=p95,
                p99_ms=p99,
                levels={lv: levels.get(m, {}).get(lv, 0) for lv in LEVELS},
            )
            for m, n, p50, p95, p99 in stats
        ]

    def ctr(self, since: datetime, until: datetime) -> list[VariantCTR]:
        kinds = ", ".join(f"'{k}'" for k in CLICK_KINDS)
        rows = self._rows(
            f"""
            SELECT variant, count() AS impressions, sum(clicked) AS clicks FROM (
                SELECT imp.event_id, any(imp.variant) AS variant,
                       max(ix.ts >= imp.served_at
                           AND ix.ts < imp.served_at + INTERVAL {self.click_window_s} SECOND
                       ) AS clicked
                FROM (
                    SELECT event_id, user_id, variant, served_at, arrayJoin(item_ids) AS item_id
                    FROM {self.db}.impressions FINAL
                    WHERE served_at >= {_ts(since)} AND served_at < {_ts(until)}
                ) AS imp
                LEFT JOIN (
                    SELECT user_id, item_id, ts FROM {self.db}.interactions FINAL
                    WHERE kind IN ({kinds}) AND ts >= {_ts(since)}
                ) AS ix ON imp.user_id = ix.user_id AND imp.item_id = ix.item_id
                GROUP BY imp.event_id
            )
            GROUP BY variant ORDER BY variant"""
        )
        out = []
        for variant, impressions, clicks in rows:
            low, high = wilson_interval(int(clicks), int(impressions))
            out.append(
                VariantCTR(
                    variant=variant,
                    impressions=impressions,
                    clicks=clicks,
                    ctr=clicks / impressions if impressions else 0.0,
                    ci_low=low,
                    ci_high=high,
                )
            )
        return out

    def coverage(self, since: datetime, until: datetime) -> Coverage:
        live = f"SELECT item_id FROM {self.db}.catalog FINAL WHERE removed = 0"
        ((catalog_items,),) = self._rows(f"SELECT count() FROM ({live})")
        ((served,),) = self._rows(
            f"""
            SELECT uniqExact(item_id) FROM (
                SELECT arrayJoin(item_ids) AS item_id FROM {self.db}.impressions FINAL
                WHERE served_at >= {_ts(since)} AND served_at < {_ts(until)}
            ) WHERE item_id IN ({live})"""
        )
        share = served / catalog_items if catalog_items else None
        return Coverage(catalog_items=catalog_items, served_items=served, share=share)


def render(report: Report) -> str:
    """The report as plain text tables (what `streamrec report` prints)."""
    lines = [
        f"window {report.since:%Y-%m-%d %H:%M} .. {report.until:%Y-%m-%d %H:%M} UTC, "
        f"click window {report.click_window_s}s",
        "",
        "per minute (UTC)   requests   p50 ms   p95 ms   p99 ms   " + "  ".join(LEVELS),
    ]
    for m in report.per_minute:
        lv = "  ".join(f"{m.levels.get(level, 0):>{len(level)}}" for level in LEVELS)
        lines.append(
            f"{m.minute:%Y-%m-%d %H:%M}   {m.requests:>8}   {m.p50_ms:>6.1f}   "
            f"{m.p95_ms:>6.1f}   {m.p99_ms:>6.1f}   {lv}"
        )
    if not report.per_minute:
        lines.append("(no impressions in the last minutes)")
    lines += ["", "variant        impressions   clicks      CTR   95% CI"]
    for v in report.variants:
        lines.append(
            f"{v.variant:<14} {v.impressions:>11}   {v.clicks:>6}   {v.ctr:>6.2%}   "
            f"[{v.ci_low:.2%}, {v.ci_high:.2%}]"
        )
    if not report.variants:
        lines.append("(no impressions in the window)")
    c = report.coverage
    share = "n/a (empty catalog)" if c.share is None else f"{c.share:.1%}"
    verdict = "meets" if c.meets_target else "below"
    lines += [
        "",
        f"catalog coverage: {c.served_items} of {c.catalog_items} live items served = {share} "
        f"({verdict} the {c.target:.0%} target)",
    ]
    if report.skew is not None:
        lines += ["", render_skew(report.skew)]
    return "\n".join(lines)
