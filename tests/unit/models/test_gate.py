"""The evaluation gate on synthetic top lists: better passes, worse stops, seeded CI."""

from __future__ import annotations

import numpy as np
import pytest

from streamrec.models.gate import gate

N_ITEMS, USERS = 500, 300


def _holdout(seed: int = 0) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Targets per user, a top-20 list that hits them (good), and a random one (bad)."""
    rng = np.random.default_rng(seed)
    targets = [rng.choice(np.arange(1, N_ITEMS + 1), size=5, replace=False) for _ in range(USERS)]
    good, bad = [], []
    for t in targets:
        others = rng.choice(np.setdiff1d(np.arange(1, N_ITEMS + 1), t), size=20, replace=False)
        good.append(np.concatenate([t[:3], others[:17]]))
        bad.append(others)
    return targets, np.asarray(good), np.asarray(bad)


def test_better_candidate_passes_and_worse_is_stopped() -> None:
    targets, good, bad = _holdout()
    better = gate(good, bad, targets, margin=0.01, samples=200)
    assert better.passed
    assert better.metrics["ndcg_20"].ci_low > 0
    worse = gate(bad, good, targets, margin=0.01, samples=200)
    assert not worse.passed
    for m in ("ndcg_20", "recall_20"):
        c = worse.metrics[m]
        assert c.ci_low <= c.diff <= c.ci_high < -0.01
        assert not c.passed
    assert worse.users == USERS and worse.samples == 200


def test_shuffled_candidate_is_stopped() -> None:
    targets, good, _ = _holdout()
    shuffled = good[np.random.default_rng(1).permutation(USERS)]  # each user gets another's list
    assert not gate(shuffled, good, targets, samples=200).passed


def test_equal_models_pass_within_margin() -> None:
    targets, good, _ = _holdout()
    verdict = gate(good, good.copy(), targets, samples=100)
    assert verdict.passed and verdict.metrics["recall_20"].diff == 0.0


def test_bootstrap_is_deterministic_with_a_seed() -> None:
    targets, good, bad = _holdout()
    mixed = np.where(np.arange(USERS)[:, None] % 2 == 0, good, bad)
    a = gate(mixed, good, targets, seed=7, samples=300)
    assert a == gate(mixed, good, targets, seed=7, samples=300)
    assert (
        a.metrics["ndcg_20"].ci_low
        != gate(mixed, good, targets, seed=8, samples=300).metrics["ndcg_20"].ci_low
    )


def test_mismatched_users_is_an_error() -> None:
    targets, good, bad = _holdout()
    with pytest.raises(ValueError, match="same users"):
        gate(good[:-1], bad, targets)


def test_verdict_rides_on_registry_changes() -> None:
    from streamrec.topics import RegistryChange

    targets, good, bad = _holdout()
    verdict = gate(good, bad, targets, samples=50)
    change = RegistryChange(
        kind="ranker", name="ranker", version="v1", action="publish", gate=verdict.model_dump()
    )
    back = RegistryChange.model_validate_json(change.model_dump_json())
    assert back.gate is not None and back.gate["passed"] is True
    assert RegistryChange(kind="ranker", name="ranker", version="v1", action="promote").gate is None
