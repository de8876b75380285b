"""`streamrec report`'s numbers against the same figures computed here, in Python.

Rows go straight into a chDB directory of the test's own (the sink's path into it is tested
in test_sink.py); the expected values are computed from the generated events, not from SQL.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from scipy.stats import norm

from streamrec.analytics import schema
from streamrec.analytics.experiments import assign_variant
from streamrec.analytics.report import CLICK_KINDS, LEVELS, ReportBuilder, render
from streamrec.analytics.store import store_session
from streamrec.infra.settings import Settings
from streamrec.topics import CatalogItem, Impression, Interaction

pytestmark = pytest.mark.integration

UNTIL = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CLICK_WINDOW_S = 600


def _events(rng: random.Random):
    users = [f"u{i}" for i in range(40)]
    items = [f"it{i}" for i in range(60)]
    catalog = [CatalogItem(item_id=i, updated_at=UNTIL - timedelta(days=30)) for i in items]
    # Two items removed later (latest state wins), one re-added: 59 live items.
    catalog += [
        CatalogItem(item_id="it58", op="remove", updated_at=UNTIL - timedelta(days=2)),
        CatalogItem(item_id="it59", op="remove", updated_at=UNTIL - timedelta(days=2)),
        CatalogItem(item_id="it59", updated_at=UNTIL - timedelta(days=1)),
    ]
    shown, acted = [], []
    for n in range(900):
        at = UNTIL - timedelta(milliseconds=rng.randint(1000, 14 * 60_000))
        user = rng.choice(users)
        variant = assign_variant(user, "exp", ("control", "treatment"))
        imp = Impression(
            event_id=f"m{n}",
            request_id=f"r{n}",
            user_id=user,
            item_ids=rng.sample(items[:50], 4),
            level=rng.choice(LEVELS),
            variant=variant,
            latency_ms=round(rng.lognormvariate(3, 0.6), 3),
            served_at=at,
        )
        shown.append(imp)
        for item in imp.item_ids:
            if rng.random() < (0.08 if variant == "treatment" else 0.04):
                later = at + timedelta(milliseconds=rng.randint(0, 2000 * CLICK_WINDOW_S))
                kind = rng.choice(["click", "watch", "view", "skip"])
                acted.append((user, item, kind, later))
    interactions = [
        Interaction(event_id=f"e{k}", user_id=u, item_id=i, kind=kind, ts=ts)
        for k, (u, i, kind, ts) in enumerate(acted)
    ]
    # An old impression outside the report window (a week): must not count anywhere.
    shown.append(
        Impression(
            event_id="old",
            request_id="old",
            user_id="u1",
            item_ids=["it55"],
            level="FULL",
            latency_ms=1.0,
            served_at=UNTIL - timedelta(days=9),
        )
    )
    return catalog, shown, interactions


def _expected_ctr(shown: list[Impression], interactions: list[Interaction]):
    window = timedelta(seconds=CLICK_WINDOW_S)
    since = UNTIL - timedelta(days=7)
    clicks_by = {}
    for e in interactions:
        if e.kind in CLICK_KINDS:
            clicks_by.setdefault((e.user_id, e.item_id), []).append(e.ts)
    out: dict[str, list[int]] = {}
    for imp in shown:
        if not since <= imp.served_at < UNTIL:
            continue
        clicked = any(
            imp.served_at <= ts < imp.served_at + window
            for item in imp.item_ids
            for ts in clicks_by.get((imp.user_id, item), [])
        )
        tally = out.setdefault(imp.variant, [0, 0])
        tally[0] += 1
        tally[1] += int(clicked)
    return out


def test_report_matches_independent_computation(tmp_path):
    settings = Settings().with_overrides(
        stack={"state_dir": tmp_path},
        analytics={"click_window_s": CLICK_WINDOW_S},
    )
    catalog, shown, interactions = _events(random.Random(7))
    with store_session(settings) as client:
        for table, rows in (
            (schema.CATALOG, [schema.catalog_row(e) for e in catalog]),
            (schema.IMPRESSIONS, [schema.impression_row(e) for e in shown]),
            # every row twice: a redelivery must not change a figure
            (schema.INTERACTIONS, [schema.interaction_row(e) for e in interactions] * 2),
        ):
            schema.insert(client, "streamrec", table, rows)
        # ... and the first 100 impressions again
        again = [schema.impression_row(e) for e in shown[:100]]
        schema.insert(client, "streamrec", schema.IMPRESSIONS, again)
        report = ReportBuilder(client, settings).build(until=UNTIL, minutes=15)

    recent = [e for e in shown if e.served_at >= UNTIL - timedelta(minutes=15)]
    by_minute: dict[datetime, list[Impression]] = {}
    for e in recent:
        by_minute.setdefault(e.served_at.replace(second=0, microsecond=0), []).append(e)
    assert [m.minute for m in report.per_minute] == sorted(by_minute)
    for row in report.per_minute:
        group = by_minute[row.minute]
        latencies = np.array([e.latency_ms for e in group])
        assert row.requests == len(group)
        assert row.p50_ms == pytest.approx(np.percentile(latencies, 50), rel=1e-9)
        assert row.p95_ms == pytest.approx(np.percentile(latencies, 95), rel=1e-9)
        assert row.p99_ms == pytest.approx(np.percentile(latencies, 99), rel=1e-9)
        assert row.levels == {lv: sum(e.level == lv for e in group) for lv in LEVELS}

    expected = _expected_ctr(shown, interactions)
    assert {v.variant: [v.impressions, v.clicks] for v in report.variants} == expected
    z = norm.ppf(0.975)
    for v in report.variants:
        n, k = v.impressions, v.clicks
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        assert (v.ci_low, v.ci_high) == pytest.approx((centre - half, centre + half))
        assert v.ci_low <= v.ctr <= v.ci_high

    live = {c.item_id for c in catalog if c.item_id not in ("it58",)}
    served = {
        i for e in shown if e.served_at >= UNTIL - timedelta(days=7) for i in e.item_ids
    } & live
    assert report.coverage.catalog_items == len(live) == 59
    assert report.coverage.served_items == len(served)
    assert report.coverage.share == pytest.approx(len(served) / len(live))
    text = render(report)
    assert "control" in text and "treatment" in text and "catalog coverage" in text
