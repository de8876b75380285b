"""The shadow summaries: agreement@k, pooled samples over workers, the rendered report."""

import numpy as np

from streamrec.serving.shadow import ShadowRecorder, agreement_at_k, merge, render


def test_agreement_at_k_is_the_top_k_overlap_share():
    a = np.arange(40, dtype=np.float32)
    assert agreement_at_k(a, a) == 1.0
    assert agreement_at_k(a, -a) == 0.0
    b = a.copy()
    b[[39, 0]] = b[[0, 39]]  # one of the served top-20 swapped out of the shadow's
    assert agreement_at_k(a, b) == 19 / 20
    assert agreement_at_k(a[:5], -a[:5]) == 1.0  # fewer than k candidates: all of them
    assert agreement_at_k(a[:0], a[:0]) is None


def test_a_new_served_version_starts_a_new_comparison():
    r = ShadowRecorder("s", "w1")
    a = np.arange(30, dtype=np.float32)
    r.observe("v1", [a], [a], 0.001, 0.002)
    r.observe("v2", [a, a], [a, -a], 0.001, 0.002)
    s = r.snapshot()
    assert (s.served_version, s.requests, s.batches) == ("v2", 2, 1)
    assert s.agreement_hist[20] == 1 and s.agreement_sum == 1.0 + agreement_at_k(a, -a)


def test_workers_merge_per_version_pair_and_render():
    a = np.arange(30, dtype=np.float32)
    one, two = ShadowRecorder("s", "w1"), ShadowRecorder("s", "w2")
    one.observe("v1", [a], [a], 0.001, 0.004)
    two.observe("v1", [a], [-a], 0.003, 0.006)
    (report,) = merge([one.snapshot(), two.snapshot()])
    assert report.workers == 2 and report.requests == 2
    assert report.agreement_mean == (1.0 + agreement_at_k(a, -a)) / 2
    assert report.shadow_ms.n == 2 and abs(report.shadow_ms.mean - 5.0) < 1e-9
    text = render([report])
    assert "agreement@20" in text and "shadow s beside served v1" in text
    assert "no shadow comparisons" in render([])
