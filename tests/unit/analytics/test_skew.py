"""The skew check's pure parts: training bins, PSI, merging serving counts, verdicts."""

import numpy as np
import pytest

from streamrec.analytics.skew import (
    SkewSample,
    check,
    judge,
    merge,
    psi,
    render,
)
from streamrec.models.feature_profile import (
    FeatureProfile,
    bin_counts,
    build_profile,
    load_profile,
    save_profile,
)

NAMES = ("wide", "coarse")
WARN, DRIFT, MIN = 0.1, 0.25, 1000


def training(n: int = 20_000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # A continuous feature and one with three distinct values (deciles collapse).
    return np.stack([rng.normal(size=n), rng.choice([0.0, 0.5, 1.0], size=n)], axis=1)


def sample_of(profile: FeatureProfile, values: np.ndarray, version: str = "v1") -> SkewSample:
    edges = [np.asarray(f.edges) for f in profile.features]
    counts = bin_counts(edges, values)
    return SkewSample(
        version=version,
        worker="w",
        batches=1,
        rows=len(values),
        counts={n: c.tolist() for n, c in zip(profile.names, counts, strict=True)},
    )


def test_profile_bins_are_deduplicated_deciles_and_shares_sum_to_one(tmp_path):
    profile = build_profile(training(), NAMES)
    wide, coarse = profile.features
    assert len(wide.edges) == 9 and wide.edges == sorted(wide.edges)
    assert all(s == pytest.approx(0.1, abs=0.01) for s in wide.shares)
    assert coarse.edges == [0.0, 0.5, 1.0]  # three values: three cut points, four bins
    assert sum(coarse.shares) == pytest.approx(1.0) and coarse.shares[0] == 0.0
    save_profile(tmp_path, profile)
    assert load_profile(tmp_path) == profile
    assert load_profile(tmp_path / "older") is None  # a version trained before profiles


def test_bins_are_closed_on_the_left_and_nan_is_left_out():
    edges = [np.array([0.0, 1.0])]
    (counts,) = bin_counts(edges, np.array([[-5.0], [0.0], [0.5], [1.0], [9.0], [np.nan]]))
    assert counts.tolist() == [1, 2, 2]


def test_psi_is_zero_for_the_same_shares_and_large_for_a_shift():
    assert psi([0.5, 0.5], [500, 500]) == pytest.approx(0.0)
    assert psi([0.5, 0.5], [900, 100]) == pytest.approx(0.4 * np.log(1.8) + 0.4 * np.log(5))
    assert np.isfinite(psi([0.5, 0.5, 0.0], [0, 0, 10]))  # empty bins are floored
    assert [judge(v, WARN, DRIFT) for v in (0.05, 0.1, 0.3)] == ["ok", "warn", "drift"]


def test_same_distribution_is_ok_and_a_shifted_one_drifts():
    profile = build_profile(training(seed=0), NAMES)
    same = sample_of(profile, training(5000, seed=1))
    report = check(profile, same, "v1", WARN, DRIFT, MIN, workers=1)
    assert report.status == "checked" and not report.drifted and not report.warned
    assert all(f.psi is not None and f.psi < 0.02 and f.samples == 5000 for f in report.features)
    moved = training(5000, seed=2)
    moved[:, 0] += 1.0
    report = check(profile, sample_of(profile, moved), "v1", WARN, DRIFT, MIN)
    assert report.drifted == ["wide"]
    assert "drift" in render(report) and "wide" in render(report)


def test_merge_sums_one_versions_counts_across_workers():
    a = SkewSample(version="v1", worker="a", batches=2, rows=3, counts={"x": [1, 2]})
    b = SkewSample(version="v1", worker="b", batches=1, rows=4, counts={"x": [3, 1], "y": [4]})
    other = SkewSample(version="v0", worker="c", batches=9, rows=9, counts={"x": [9, 9]})
    odd = SkewSample(version="v1", worker="d", batches=1, rows=3, counts={"x": [1, 1, 1]})
    total = merge([a, b, other, odd], "v1")
    assert total.batches == 4 and total.rows == 10
    assert total.counts == {"x": [4, 3], "y": [4]}  # a different profile's bins are left out


def test_no_ranker_no_profile_no_samples_and_too_few_samples():
    profile = build_profile(training(), NAMES)
    assert check(None, None, None, WARN, DRIFT, MIN).status == "no ranker"
    no_profile = check(None, None, "v1", WARN, DRIFT, MIN)
    assert no_profile.status == "no profile" and "no training feature profile" in render(no_profile)
    assert check(profile, None, "v1", WARN, DRIFT, MIN).status == "no samples"
    few = check(profile, sample_of(profile, training(50)), "v1", WARN, DRIFT, MIN)
    assert [f.verdict for f in few.features] == ["too few samples"] * 2
    assert all(f.psi is None and f.samples == 50 for f in few.features)
    assert not few.drifted


def test_an_unreadable_profile_is_no_profile(tmp_path):
    (tmp_path / "feature_profile.json").write_text("{not json")
    assert load_profile(tmp_path) is None
