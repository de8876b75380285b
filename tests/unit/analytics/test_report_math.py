"""The report's pure parts: the Wilson interval and the text rendering."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streamrec.analytics.report import (
    Coverage,
    MinuteStats,
    Report,
    VariantCTR,
    render,
    wilson_interval,
)


def test_wilson_interval_known_values_and_edges():
    # 10 of 100: the textbook Wilson 95% interval is [0.0552, 0.1744].
    low, high = wilson_interval(10, 100)
    assert (round(low, 4), round(high, 4)) == (0.0552, 0.1744)
    assert wilson_interval(0, 0) == (0.0, 0.0)
    low, high = wilson_interval(0, 50)
    assert low == pytest.approx(0.0, abs=1e-12) and 0.0 < high < 0.1  # still an upper bound
    low, high = wilson_interval(50, 50)
    assert high == pytest.approx(1.0) and 0.9 < low < 1.0


def test_render_names_every_part():
    minute = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    report = Report(
        since=minute,
        until=minute,
        click_window_s=1800,
        per_minute=[
            MinuteStats(
                minute=minute,
                requests=3,
                p50_ms=10,
                p95_ms=20,
                p99_ms=30,
                levels={"FULL": 2, "STALE_FEATURES": 0, "SIMPLE_RANKING": 0, "POPULAR": 1},
            )
        ],
        variants=[
            VariantCTR(
                variant="control", impressions=3, clicks=1, ctr=1 / 3, ci_low=0.06, ci_high=0.79
            )
        ],
        coverage=Coverage(catalog_items=10, served_items=9, share=0.9),
    )
    text = render(report)
    assert "2026-03-01 12:00" in text and "POPULAR" in text
    assert "control" in text and "33.33%" in text
    assert "9 of 10 live items served = 90.0% (below the 95% target)" in text


def test_the_skew_section_is_rendered_and_in_the_json():
    from streamrec.analytics.skew import FeatureSkew, SkewReport

    minute = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    skew = SkewReport(
        version="v7",
        status="checked",
        workers=2,
        batches=12,
        warn=0.1,
        drift=0.25,
        min_samples=1000,
        features=[
            FeatureSkew(name="item_popularity", psi=0.31, verdict="drift", samples=4000, bins=10)
        ],
    )
    report = Report(
        since=minute,
        until=minute,
        click_window_s=1800,
        per_minute=[],
        variants=[],
        coverage=Coverage(catalog_items=0, served_items=0, share=None),
        skew=skew,
    )
    text = render(report)
    assert "train/serve skew of ranker v7" in text and "item_popularity" in text
    assert "0.3100" in text and "drift" in text
    assert Report.model_validate_json(report.model_dump_json()).skew == skew
