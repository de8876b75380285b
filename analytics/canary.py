"""A ranker canary against its control, from ClickHouse: CTR with its 95% CI, p99, error rate.

Responsibilities: the figures of one canary stage (`canary_figures`) and the judgement the
rollout controller acts on (`judge`). Definitions follow the report's (`analytics/report.py`,
ADR 0052): an impression is clicked when its user acts on one of its items within
`analytics.click_window_s`; the CTR interval of each side is the report's Wilson interval.

- **sides**: impressions of variant "canary" (users the canary serves) against every other
  impression in the stage's window (the promoted ranker's users).
- **CTR difference**: canary - control, with the wider of two intervals: Newcombe's, built
  from the two Wilson intervals (hybrid score interval), and a normal interval with the
  users as the independent units (a user's impressions share clicks and taste; `ctr_interval`).
- **p99**: `quantileExactInclusive(0.99)` of `latency_ms` per side.
- **error-rate difference**: canary - control, with the same Newcombe interval as the CTR's.
- **error**: an answer at level SIMPLE_RANKING (the ranker failed, timed out or was not
  loaded), or, on the canary side, one the promoted ranker answered because the canary
  failed (its `model_version` is the control's version).

Impressions younger than the click window are counted as not (yet) clicked on both sides
alike, so they dilute both CTRs the same way rather than bias the difference.
"""

from __future__ import annotations

import math
from datetime import datetime
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from streamrec.analytics.errors import QueryError
from streamrec.analytics.experiments import CANARY_VARIANT
from streamrec.analytics.report import CLICK_KINDS, _ts, wilson_interval
from streamrec.infra.settings import RolloutSettings, Settings

_Z95 = NormalDist().inv_cdf(0.975)


class Side(BaseModel):
    impressions: int = 0
    clicks: int = 0
    ctr: float = 0.0
    ci_low: float = 0.0
    ci_high: float = 0.0
    p99_ms: float = 0.0
    errors: int = 0
    error_rate: float = 0.0
    users: int = 0


class CanaryFigures(BaseModel):
    version: str
    against: str
    since: datetime
    until: datetime
    canary: Side
    control: Side
    ctr_diff: float
    ctr_diff_low: float
    ctr_diff_high: float


class Judgement(BaseModel):
    action: Literal["wait", "advance", "rollback"]
    reason: str


def _newcombe(
    a: tuple[float, float, float], b: tuple[float, float, float]
) -> tuple[float, float, float]:
    """(diff, low, high) of a - b from two (rate, Wilson low, Wilson high) (Newcombe, 1998)."""
    (pa, la, ha), (pb, lb, hb) = a, b
    diff = pa - pb
    low = diff - math.sqrt((pa - la) ** 2 + (hb - pb) ** 2)
    high = diff + math.sqrt((ha - pa) ** 2 + (pb - lb) ** 2)
    return diff, low, high


def newcombe_interval(a: Side, b: Side) -> tuple[float, float, float]:
    """(diff, low, high) of a.ctr - b.ctr from the two Wilson intervals."""
    return _newcombe((a.ctr, a.ci_low, a.ci_high), (b.ctr, b.ci_low, b.ci_high))


def _clustered_variance(users: list[tuple[int, int]]) -> float | None:
    """Variance of a side's CTR (sum of clicks / sum of impressions) with its users as the
    independent units (the ratio estimator's linearisation, with the small-sample factor
    N / (N - 1)); None with fewer than two users."""
    if len(users) < 2:
        return None
    n = np.array([u[0] for u in users], dtype=float)
    c = np.array([u[1] for u in users], dtype=float)
    ratio = c.sum() / n.sum()
    return float(len(users) / (len(users) - 1) * ((c - ratio * n) ** 2).sum() / n.sum() ** 2)


def ctr_interval(
    a: Side, b: Side, a_users: list[tuple[int, int]], b_users: list[tuple[int, int]]
) -> tuple[float, float, float]:
    """(diff, low, high) of a.ctr - b.ctr: the wider of Newcombe's interval, which takes the
    impressions as independent, and the interval with the users as the units (each side's
    (impressions, clicks) per user). One user's answers share a click (a click counts for
    every impression of it within the window) and a user's taste, so with few users on a
    side (a 5% canary of a small population) the impressions are not independent, and
    Newcombe's interval alone is too narrow: an unchanged ranker was rolled back. With
    fewer than two users on a side, only Newcombe's."""
    diff, low, high = newcombe_interval(a, b)
    va, vb = _clustered_variance(a_users), _clustered_variance(b_users)
    if va is None or vb is None:
        return diff, low, high
    half = _Z95 * math.sqrt(va + vb)
    return diff, min(low, diff - half), max(high, diff + half)


def error_interval(a: Side, b: Side) -> tuple[float, float, float]:
    """(diff, low, high) of a.error_rate - b.error_rate, the same way as the CTR's."""

    def rate(s: Side) -> tuple[float, float, float]:
        low, high = wilson_interval(s.errors, s.impressions)
        return s.error_rate, low, high

    return _newcombe(rate(a), rate(b))


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def canary_figures(
    client: Any, settings: Settings, version: str, against: str, since: datetime, until: datetime
) -> CanaryFigures:
    db = settings.clickhouse.database
    window = settings.analytics.click_window_s
    kinds = ", ".join(f"'{k}'" for k in CLICK_KINDS)
    canary = f"'{CANARY_VARIANT}'"
    # One row per impression of the window: its user, side, latency, error and click.
    per_impression = f"""
            SELECT imp.event_id, any(imp.user_id) AS user_id, any(imp.variant) = {canary} AS side,
                   any(imp.latency_ms) AS latency_ms, any(imp.err) AS err,
                   max(ix.ts >= imp.served_at
                       AND ix.ts < imp.served_at + INTERVAL {window} SECOND) AS clicked
            FROM (
                SELECT event_id, user_id, variant, served_at, latency_ms,
                       level = 'SIMPLE_RANKING'
                           OR (variant = {canary} AND model_version = {_quote(against)}) AS err,
                       arrayJoin(item_ids) AS item_id
                FROM {db}.impressions FINAL
                WHERE served_at >= {_ts(since)} AND served_at < {_ts(until)}
            ) AS imp
            LEFT JOIN (
                SELECT user_id, item_id, ts FROM {db}.interactions FINAL
                WHERE kind IN ({kinds}) AND ts >= {_ts(since)}
            ) AS ix ON imp.user_id = ix.user_id AND imp.item_id = ix.item_id
            GROUP BY imp.event_id"""
    sql = f"""
        SELECT side, count(), sum(clicked), quantileExactInclusive(0.99)(latency_ms), sum(err)
        FROM ({per_impression})
        GROUP BY side"""
    users_sql = f"""
        SELECT side, count(), sum(clicked) FROM ({per_impression}) GROUP BY side, user_id"""
    try:
        rows = client.query(sql).result_rows
        user_rows = client.query(users_sql).result_rows
    except Exception as exc:  # clickhouse-connect/chDB errors, translated at the boundary
        raise QueryError(f"canary query failed: {exc}\n{sql}") from exc
    per_user: dict[bool, list[tuple[int, int]]] = {True: [], False: []}
    for side, impressions, clicks in user_rows:
        per_user[bool(side)].append((int(impressions), int(clicks)))
    sides = {True: Side(), False: Side()}
    for side, impressions, clicks, p99, errors in rows:
        low, high = wilson_interval(int(clicks), int(impressions))
        sides[bool(side)] = Side(
            impressions=int(impressions),
            clicks=int(clicks),
            ctr=clicks / impressions if impressions else 0.0,
            ci_low=low,
            ci_high=high,
            p99_ms=float(p99),
            errors=int(errors),
            error_rate=errors / impressions if impressions else 0.0,
            users=len(per_user[bool(side)]),
        )
    diff, low, high = ctr_interval(sides[True], sides[False], per_user[True], per_user[False])
    return CanaryFigures(
        version=version,
        against=against,
        since=since,
        until=until,
        canary=sides[True],
        control=sides[False],
        ctr_diff=diff,
        ctr_diff_low=low,
        ctr_diff_high=high,
    )


def judge(f: CanaryFigures, cfg: RolloutSettings) -> Judgement:
    """Roll back on the first regression past its margin (each is checked as soon as both
    sides have `min_impressions`); otherwise advance; until then, wait."""
    k, c = f.canary, f.control
    if min(k.impressions, c.impressions) < cfg.min_impressions:
        return Judgement(
            action="wait",
            reason=f"{k.impressions} canary / {c.impressions} control impressions of "
            f"{cfg.min_impressions} each",
        )
    if f.ctr_diff_high < -cfg.ctr_margin:
        return Judgement(
            action="rollback",
            reason=f"CTR {k.ctr:.2%} vs control {c.ctr:.2%}: difference {f.ctr_diff:+.2%} "
            f"[{f.ctr_diff_low:+.2%}, {f.ctr_diff_high:+.2%}] below -{cfg.ctr_margin:.2%}",
        )
    if k.p99_ms - c.p99_ms > cfg.p99_margin_ms:
        return Judgement(
            action="rollback",
            reason=f"p99 {k.p99_ms:.1f} ms vs control {c.p99_ms:.1f} ms: more than "
            f"{cfg.p99_margin_ms:g} ms slower",
        )
    # Like the CTR, the error rate is judged on its interval: at a stage's few thousand
    # impressions one stray slow answer is not a regression, a steady excess is.
    e_diff, e_low, e_high = error_interval(k, c)
    if e_low > cfg.error_margin:
        return Judgement(
            action="rollback",
            reason=f"error rate {k.error_rate:.2%} vs control {c.error_rate:.2%}: difference "
            f"{e_diff:+.2%} [{e_low:+.2%}, {e_high:+.2%}] above +{cfg.error_margin:.2%}",
        )
    return Judgement(
        action="advance",
        reason=f"CTR difference {f.ctr_diff:+.2%} [{f.ctr_diff_low:+.2%}, "
        f"{f.ctr_diff_high:+.2%}], p99 {k.p99_ms:.1f} vs {c.p99_ms:.1f} ms, errors "
        f"{k.error_rate:.2%} vs {c.error_rate:.2%} over {k.impressions} / {c.impressions}",
    )
