"""Retraining's pure parts: the trigger, the hold-out cut-off and split, the hold-out users,
the shuffled-ids hook and the versions' status."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from streamrec.infra.settings import Settings, TrainerSettings
from streamrec.models.dataset import COLUMNS
from streamrec.models.gate import GateVerdict, MetricComparison
from streamrec.models.items import ItemTable
from streamrec.models.registry import Manifest, ModelRegistry
from streamrec.models.retrain import (
    GateOutcome,
    RetrainTrigger,
    gate_reason,
    holdout_cutoff,
    holdout_set,
    new_since,
    shuffle_items,
    split_at,
    trained_before,
    version_status,
)

CFG = TrainerSettings(interval_s=1000, min_new_interactions=100, min_gap_s=10)


def test_first_training_needs_only_some_interactions() -> None:
    trigger = RetrainTrigger(CFG, last_trained=None)
    assert trigger.due(0.0, 0) is None
    assert trigger.due(0.0, 1).reason == "first"


def test_interaction_trigger_fires_at_n_and_respects_the_gap() -> None:
    trigger = RetrainTrigger(CFG, last_trained=100.0)
    assert trigger.due(105.0, 500) is None  # within min_gap_s
    assert trigger.due(111.0, 99) is None
    fired = trigger.due(111.0, 100)
    assert fired is not None and (fired.reason, fired.new_interactions) == ("interactions", 100)
    trigger.trained(111.0)
    assert trigger.due(115.0, 100) is None


def test_schedule_fires_after_the_interval_but_not_without_news() -> None:
    trigger = RetrainTrigger(CFG, last_trained=0.0)
    assert trigger.due(999.0, 1) is None
    assert trigger.due(1000.0, 1).reason == "schedule"
    assert trigger.due(5000.0, 0) is None  # a schedule with nothing new trains nothing


def test_interaction_trigger_off_at_zero() -> None:
    trigger = RetrainTrigger(CFG.model_copy(update={"min_new_interactions": 0}), 0.0)
    assert trigger.due(50.0, 10**9) is None


def test_new_since_counts_per_partition_from_the_trained_offsets() -> None:
    assert new_since({0: 10, 1: 5, 2: 7}, {0: 4, 1: 5}) == 6 + 0 + 7
    assert new_since({0: 3}, {0: 9}) == 0  # never negative (a reset topic)


def _events(ts: list[int], users: list[str] | None = None) -> pd.DataFrame:
    n = len(ts)
    return pd.DataFrame(
        {
            "user_id": users or ["u"] * n,
            "item_id": [str(i % 5 + 1) for i in range(n)],
            "rating": [4.0] * n,
            "ts": ts,
            "seq": range(n),
        }
    )[COLUMNS]


def test_holdout_is_the_newest_share_and_training_lies_strictly_before() -> None:
    events = _events(list(range(100, 200)))
    cut = holdout_cutoff(events, 0.1)
    assert cut == 190
    before, after = split_at(events, cut)
    assert len(before) == 90 and len(after) == 10
    assert before.ts.max() < cut <= after.ts.min()


def test_holdout_never_starts_before_the_promoted_models_cut_off() -> None:
    events = _events(list(range(100, 200)))
    assert holdout_cutoff(events, 0.1, not_before=195) == 195
    assert holdout_cutoff(events, 0.1, not_before=150) == 190
    before, after = split_at(events, 195)
    assert len(after) == 5 and before.ts.max() == 194


def test_ties_at_the_cut_off_all_go_to_the_holdout() -> None:
    events = _events([1, 2, 3, 3, 3, 3, 3, 3, 3, 3])
    cut = holdout_cutoff(events, 0.1)
    before, after = split_at(events, cut)
    assert cut == 3 and len(before) == 2 and len(after) == 8


def test_trained_before_reads_the_manifest_or_the_data_window() -> None:
    assert trained_before({"trained_before": 42}, {}) == 42
    window = {"train": [10, 50], "valid": [20, 80], "test": [30, 99]}
    assert trained_before({}, window) == 81  # `streamrec train` trained on train + valid


def test_shuffle_items_is_a_seeded_permutation_of_the_ids() -> None:
    events = _events(list(range(50)))
    shuffled = shuffle_items(events, seed=1)
    assert sorted(shuffled.item_id.unique()) == sorted(events.item_id.unique())
    assert (shuffled.item_id != events.item_id).any()
    # One id always becomes the same other id: a relabelling, not a per-row shuffle.
    pairs = set(zip(events.item_id, shuffled.item_id, strict=True))
    assert len(pairs) == events.item_id.nunique()
    assert shuffled.equals(shuffle_items(events, seed=1))
    assert (shuffled[["user_id", "ts", "seq"]] == events[["user_id", "ts", "seq"]]).all().all()


def _table(n: int = 6) -> ItemTable:
    return ItemTable(
        ids=np.asarray([str(i) for i in range(1, n + 1)]),
        genres=np.zeros((n, 19), dtype=np.float32),
        year=np.zeros(n, dtype=np.float32),
        popularity=np.ones(n, dtype=np.float32),
        mean_rating=np.zeros(n, dtype=np.float32),
        content=np.eye(n, 4, dtype=np.float32),
    )


def test_holdout_users_need_history_and_an_unseen_later_item() -> None:
    before = pd.DataFrame(
        {
            "user_id": ["a", "a", "b"],
            "item_id": ["1", "2", "3"],
            "rating": [4.0, np.nan, 3.0],
            "ts": [1, 2, 3],
            "seq": [0, 1, 2],
        }
    )
    after = pd.DataFrame(
        {
            "user_id": ["a", "a", "b", "c"],
            "item_id": ["2", "4", "3", "5"],  # a: 2 seen, 4 new; b: only a repeat; c: no history
            "rating": [4.0] * 4,
            "ts": [10, 11, 12, 13],
            "seq": [3, 4, 5, 6],
        }
    )
    table = _table()
    h = holdout_set(before, after, table, max_users=10, seed=0)
    assert [u.user_id for u in h.users] == ["a"]
    user = h.users[0]
    assert user.recent_items == ["1", "2"] and user.n_interactions == 2
    assert user.mean_rating == 4.0
    assert h.exclude[0].tolist() == table.indices(["1", "2"]).tolist()
    assert h.targets[0].tolist() == table.indices(["4"]).tolist()


def test_holdout_samples_at_most_max_users_seeded() -> None:
    users = [f"u{i}" for i in range(30)]
    before = _events([1] * 30, users)
    after = _events([5] * 30, users).assign(item_id="6")
    a = holdout_set(before, after, _table(), max_users=10, seed=3)
    b = holdout_set(before, after, _table(), max_users=10, seed=3)
    assert len(a.users) == 10 and [u.user_id for u in a.users] == [u.user_id for u in b.users]


@pytest.fixture
def registry(tmp_path) -> ModelRegistry:
    return ModelRegistry(Settings().with_overrides(stack={"state_dir": tmp_path}))


def _publish(registry: ModelRegistry, version: str, **extra: object) -> None:
    staging = registry.new_version_dir("ranker", version)
    (staging / "w").write_text(version)
    registry.publish("ranker", staging, Manifest(kind="ranker", version=version, **extra))


def _verdict(passed: bool, metrics: dict[str, MetricComparison]) -> GateVerdict:
    return GateVerdict(
        passed=passed, margin=0.01, confidence=0.95, samples=10, seed=1, users=30, metrics=metrics
    )


def _outcome(passed: bool) -> dict:
    c = MetricComparison(
        candidate=0.1, promoted=0.2, diff=-0.1, ci_low=-0.12, ci_high=-0.08, passed=passed
    )
    verdict = _verdict(passed, {"ndcg_20": c, "recall_20": c})
    return GateOutcome(
        passed=passed, reason="r", holdout_from=5, holdout_events=9, verdict=verdict
    ).model_dump(mode="json")


def test_version_status_shows_stage_and_verdict(registry) -> None:
    _publish(registry, "v1")  # `streamrec train`: no gate
    _publish(registry, "v2", gate=_outcome(True), stage="gate-passed", trigger="interactions")
    _publish(registry, "v3", gate=_outcome(False), stage="gate-failed", trigger="schedule")
    _publish(registry, "v4", gate=_outcome(True), stage="gate-passed", trigger="schedule")
    registry.promote("ranker", "v1")
    registry.promote("ranker", "v2")
    rows = {r.version: r for r in version_status(registry, "ranker")}
    assert (rows["v1"].stage, rows["v1"].gate, rows["v1"].trigger) == (
        "previously promoted",
        "",
        "manual",
    )
    assert (rows["v2"].stage, rows["v2"].gate) == ("promoted", "passed")
    assert (rows["v3"].stage, rows["v3"].gate) == ("gate-failed", "failed")
    assert rows["v4"].stage == "gate-passed"  # passed, waiting for the next stage
    assert rows["v3"].figures["ndcg_20"] == "0.1000 / 0.2000, -0.1000 [-0.1200, -0.0800]"


def test_a_better_mean_stopped_by_a_wide_interval_is_not_called_worse():
    wide = MetricComparison(
        candidate=0.1952, promoted=0.1886, diff=0.0066, ci_low=-0.0158, ci_high=0.0293, passed=False
    )
    tight = MetricComparison(
        candidate=0.17, promoted=0.15, diff=0.02, ci_low=0.001, ci_high=0.04, passed=True
    )
    reason = gate_reason(_verdict(False, {"ndcg_20": wide, "recall_20": tight}))
    assert reason.startswith("may be worse than the promoted model beyond the margin on ndcg_20:")
    assert "95% interval of the difference reaches below -0.01" in reason
    assert "recall_20" not in reason
    passed = _verdict(True, {"ndcg_20": tight, "recall_20": tight})
    assert gate_reason(passed) == "not worse than the promoted model beyond the margin"
