"""Figures particular to one scenario, added to a mode's summary and per-second rows.

- `outage_figures` (redis-failover): the requests scheduled while Redis was stopped (their
  error rate and how many were answered below FULL), and the time from Redis's recovery
  until answers were FULL again: the first FULL answer after recovery from which, for one
  second, at least 90% of the answers are FULL relative to the share before the outage
  (the worker's own normal: a loaded worker answers a few at SIMPLE_RANKING);
- `week_figures` (week): the A/B experiment read from the simulated users' clicks, as the
  analytics report defines it (`analytics.report`): an impression is an answered request,
  clicked when its user clicked at least one of its items; CTR per variant (the users'
  stable assignment, `analytics.experiments`) with a 95% Wilson interval; and catalog
  coverage: live items (the catalog and what the run uploaded) served at least once, over
  all answers and per variant's answers, with the item slots exploration filled per
  variant (`serving.exploration`: the items an answer marks explored).
"""

from __future__ import annotations

import bisect
import math

from streamrec.analytics.experiments import assign_variant, variants_of
from streamrec.analytics.report import COVERAGE_TARGET, wilson_interval
from streamrec.scenarios.report import ModeRun
from streamrec.scenarios.runner import RunFacts

FULL_AGAIN_SHARE = 0.9
FULL_AGAIN_WINDOW_S = 1.0


def full_again_s(
    answers: list[tuple[float, bool]], recovered_s: float, normal_share: float
) -> float:
    """Seconds from `recovered_s` to the first FULL answer (scheduled time, FULL?) after it
    that starts a window of `FULL_AGAIN_WINDOW_S` with a FULL share of at least
    `FULL_AGAIN_SHARE` x `normal_share`; NaN if none does."""
    after = sorted(a for a in answers if a[0] >= recovered_s)
    times = [t for t, _ in after]
    full = [0]
    for _, is_full in after:
        full.append(full[-1] + is_full)
    want = FULL_AGAIN_SHARE * normal_share
    for i, (t, is_full) in enumerate(after):
        if not is_full:
            continue
        j = bisect.bisect_left(times, t + FULL_AGAIN_WINDOW_S)
        if j - i and (full[j] - full[i]) / (j - i) >= want:
            return t - recovered_s
    return math.nan


def outage_figures(run: ModeRun, facts: RunFacts) -> None:
    clock = facts.outage
    if clock is None or clock.started_s is None or clock.ended_s is None:
        return
    start, end = clock.started_s, clock.ended_s
    for row in run.series:
        t = row["t"]
        row["redis_paused"] = 1.0 if t + 1.0 > start and t < end else 0.0
    during = [o for o in facts.outcomes if start <= o.t_s < end]
    ok = [o for o in during if o.kind == "ok"]
    before = [o for o in facts.outcomes if o.t_s < start and o.kind == "ok"]
    normal = sum(o.level == "FULL" for o in before) / len(before) if before else 1.0
    answers = [(o.t_s, o.level == "FULL") for o in facts.outcomes if o.kind == "ok"]
    s = run.summary
    s["outage_s"] = end - start
    s["outage_error_rate"] = (
        sum(o.kind in ("error", "timeout") for o in during) / len(during) if during else 0.0
    )
    s["outage_answered"] = len(ok) / len(during) if during else 0.0
    s["outage_below_full"] = sum(o.level != "FULL" for o in ok) / len(ok) if ok else 0.0
    s["full_before"] = normal
    s["full_again_s"] = full_again_s(answers, end, normal)


def week_figures(run: ModeRun, facts: RunFacts) -> None:
    settings = facts.settings
    variants = variants_of(settings)
    experiment = settings.analytics.experiment
    shown: dict[str, list[int]] = {v: [0, 0] for v in variants}  # impressions, clicked
    served: set[str] = set()
    served_by: dict[str, set[str]] = {v: set() for v in variants}
    explored_by: dict[str, int] = dict.fromkeys(variants, 0)
    explored: set[str] = set()
    for o in facts.outcomes:
        if o.kind != "ok":
            continue
        served.update(o.items)
        variant = assign_variant(o.user_id, experiment, variants)
        served_by[variant].update(o.items)
        explored_by[variant] += len(o.explored)
        explored.update(o.explored)
    for request_user, clicked in _impressions(facts):
        counts = shown[assign_variant(request_user, experiment, variants)]
        counts[0] += 1
        counts[1] += clicked
    s = run.summary
    for variant, (impressions, clicked) in shown.items():
        low, high = wilson_interval(clicked, impressions)
        s[f"ctr_{variant}"] = clicked / impressions if impressions else 0.0
        s[f"ctr_{variant}_low"] = low
        s[f"ctr_{variant}_high"] = high
        s[f"impressions_{variant}"] = float(impressions)
    if len(variants) >= 2:
        s["ctr_lift"] = s[f"ctr_{variants[1]}"] - s[f"ctr_{variants[0]}"]
    live = {i.item_id for i in facts.workload.catalog.items}
    s["catalog_items"] = float(len(live))
    s["coverage"] = len(served & live) / len(live) if live else 0.0
    s["coverage_target"] = COVERAGE_TARGET
    for variant in variants:
        s[f"coverage_{variant}"] = len(served_by[variant] & live) / len(live) if live else 0.0
        s[f"explored_{variant}"] = float(explored_by[variant])
    s["explored_items"] = float(len(explored & live))


def _impressions(facts: RunFacts) -> list[tuple[str, int]]:
    """(user, clicked) of every answered request, in the order they were scheduled."""
    return [(o.user_id, int(o.clicks > 0)) for o in facts.outcomes if o.kind == "ok"]
