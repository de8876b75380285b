"""A canary's figures from ClickHouse against the same figures computed here, in Python.

Rows go straight into a chDB directory of the test's own (as in test_report.py): impressions
of both sides inside and outside the stage's window, clicks, degraded answers and canary
answers the promoted ranker gave after the canary failed.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from streamrec.analytics import schema
from streamrec.analytics.canary import canary_figures
from streamrec.analytics.report import wilson_interval
from streamrec.analytics.store import store_session
from streamrec.infra.settings import Settings
from streamrec.topics import Impression, Interaction

pytestmark = pytest.mark.integration

SINCE = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
UNTIL = SINCE + timedelta(minutes=10)
WINDOW_S = 60


def test_canary_figures_match_an_independent_computation(tmp_path):
    settings = Settings().with_overrides(
        stack={"state_dir": tmp_path}, analytics={"click_window_s": WINDOW_S}
    )
    rng = random.Random(3)
    shown: list[Impression] = []
    acted: list[Interaction] = []
    for n in range(1200):
        canary = n % 5 == 0
        # 30 impressions before the stage began: in no figure
        at = SINCE + timedelta(seconds=rng.uniform(-60, 600) if n >= 30 else -5)
        user = f"u{n % 97}"
        level = rng.choice(["FULL"] * 8 + ["SIMPLE_RANKING", "STALE_FEATURES"])
        ranked_by = "cand" if canary else "prom"
        if canary and rng.random() < 0.05:
            ranked_by = "prom"  # the canary failed: the promoted ranker answered
        imp = Impression(
            event_id=f"m{n}",
            request_id=f"r{n}",
            user_id=user,
            item_ids=[f"it{(n + k) % 50}" for k in range(3)],
            level=level,
            model_version=ranked_by,
            variant="canary" if canary else rng.choice(["control", "treatment"]),
            latency_ms=round(rng.lognormvariate(3 + 0.3 * canary, 0.5), 3),
            served_at=at,
        )
        shown.append(imp)
        if rng.random() < (0.1 if canary else 0.2):
            later = at + timedelta(seconds=rng.uniform(0, 2 * WINDOW_S))  # half too late
            acted.append(
                Interaction(
                    event_id=f"e{n}",
                    user_id=user,
                    item_id=imp.item_ids[1],
                    kind=rng.choice(["click", "view"]),
                    ts=later,
                )
            )
    with store_session(settings) as client:
        schema.insert(
            client, "streamrec", schema.IMPRESSIONS, [schema.impression_row(e) for e in shown]
        )
        schema.insert(
            client, "streamrec", schema.INTERACTIONS, [schema.interaction_row(e) for e in acted]
        )
        f = canary_figures(client, settings, "cand", "prom", SINCE, UNTIL)

    clicks = {}
    for e in acted:
        if e.kind == "click":
            clicks.setdefault((e.user_id, e.item_id), []).append(e.ts)
    for side, figures in ((True, f.canary), (False, f.control)):
        group = [
            e for e in shown if (e.variant == "canary") == side and SINCE <= e.served_at < UNTIL
        ]
        clicked = sum(
            any(
                e.served_at <= ts < e.served_at + timedelta(seconds=WINDOW_S)
                for item in e.item_ids
                for ts in clicks.get((e.user_id, item), [])
            )
            for e in group
        )
        errors = sum(
            e.level == "SIMPLE_RANKING" or (side and e.model_version == "prom") for e in group
        )
        assert figures.impressions == len(group) and figures.clicks == clicked
        assert figures.users == len({e.user_id for e in group})
        assert (figures.ci_low, figures.ci_high) == pytest.approx(
            wilson_interval(clicked, len(group))
        )
        assert figures.errors == errors and figures.error_rate == pytest.approx(errors / len(group))
        assert figures.p99_ms == pytest.approx(
            np.percentile([e.latency_ms for e in group], 99), rel=1e-9
        )
    assert f.ctr_diff == pytest.approx(f.canary.ctr - f.control.ctr)
    assert f.ctr_diff_low < f.ctr_diff < f.ctr_diff_high
