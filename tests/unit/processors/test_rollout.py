"""The rollout controller and its judgement, over a real file registry and given figures."""

from datetime import UTC, datetime

import pytest

from streamrec.analytics.canary import (
    CanaryFigures,
    Side,
    ctr_interval,
    judge,
    newcombe_interval,
)
from streamrec.analytics.report import wilson_interval
from streamrec.infra.settings import Settings
from streamrec.models.registry import Manifest, ModelRegistry
from streamrec.models.retrain import version_status
from streamrec.processors.rollout import RolloutController

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def side(impressions: int, clicks: int, p99: float = 20.0, errors: int = 0) -> Side:
    low, high = wilson_interval(clicks, impressions)
    return Side(
        impressions=impressions,
        clicks=clicks,
        ctr=clicks / impressions,
        ci_low=low,
        ci_high=high,
        p99_ms=p99,
        errors=errors,
        error_rate=errors / impressions,
    )


def figures(
    canary: Side, control: Side, interval: tuple[float, float, float] | None = None
) -> CanaryFigures:
    diff, low, high = interval or newcombe_interval(canary, control)
    return CanaryFigures(
        version="b",
        against="a",
        since=NOW,
        until=NOW,
        canary=canary,
        control=control,
        ctr_diff=diff,
        ctr_diff_low=low,
        ctr_diff_high=high,
    )


CFG = Settings().rollout.model_copy(update={"min_impressions": 40})


@pytest.mark.parametrize(
    ("canary", "control", "action", "words"),
    [
        (side(30, 3), side(2000, 200), "wait", "30 canary"),
        (side(1000, 100), side(5000, 520), "advance", "CTR difference"),
        (side(1000, 40), side(5000, 500), "rollback", "CTR 4.00%"),
        (side(1000, 100, p99=80.0), side(5000, 500), "rollback", "p99 80.0"),
        (side(1000, 100, errors=50), side(5000, 500, errors=50), "rollback", "error rate"),
        # One stray error among a small stage's answers is 2.5 points, but not a regression.
        (side(40, 20, errors=1), side(160, 80), "advance", "errors 2.50%"),
        (side(40, 20, errors=8), side(160, 80), "rollback", "error rate 20.00%"),
    ],
)
def test_judgement(canary, control, action, words):
    verdict = judge(figures(canary, control), CFG)
    assert verdict.action == action and words in verdict.reason


def test_newcombe_interval_covers_the_difference_and_narrows_with_data():
    small = newcombe_interval(side(200, 20), side(200, 30))
    large = newcombe_interval(side(20000, 2000), side(20000, 3000))
    for diff, low, high in (small, large):
        assert low < diff < high and abs(diff + 0.05) < 1e-12
    assert large[2] - large[1] < small[2] - small[1] and large[2] < 0 < small[2]


def _users(ctrs: list[float], answers: int) -> list[tuple[int, int]]:
    return [(answers, round(answers * c)) for c in ctrs]


def test_the_ctr_interval_counts_users_not_impressions_when_few_users_differ():
    # An A/A stage: 18 canary users and 380 control users of one population, whose CTRs
    # spread from 0.1 to 1.0 by user (a click counts for every impression of the item within
    # the window, so a user's impressions go together), 12 answers each. The canary's users
    # happen to be less clicky: -8 points, which Newcombe's interval over 216 impressions
    # calls a regression, and the spread between the 18 users does not.
    canary = _users([0.1 + 0.85 * i / 17 for i in range(18)], 12)
    control = _users([0.2 + 0.8 * i / 379 for i in range(380)], 12)
    a = side(sum(n for n, _ in canary), sum(c for _, c in canary))
    b = side(sum(n for n, _ in control), sum(c for _, c in control))
    diff, low, high = ctr_interval(a, b, canary, control)
    n_diff, n_low, n_high = newcombe_interval(a, b)
    assert diff == n_diff < -0.06 and n_high < 0  # impressions alone: a regression
    assert low < n_low and high > 0  # users as the units: not one
    verdict = judge(figures(a, b, (diff, low, high)), CFG)
    assert verdict.action == "advance"


def test_the_ctr_interval_is_newcombes_when_users_agree_or_are_too_few():
    # Every user at the side's own CTR: no spread between users beyond the binomial's.
    canary, control = _users([0.0] * 20, 10), _users([1.0] * 200, 10)
    a, b = side(200, 0), side(2000, 2000)
    assert ctr_interval(a, b, canary, control) == newcombe_interval(a, b)
    one = _users([0.2], 300)
    assert ctr_interval(side(300, 60), b, one, control) == newcombe_interval(side(300, 60), b)


class Outbox(list):
    def send(self, change):
        self.append(change)


def registry_with(tmp_path) -> tuple[Settings, ModelRegistry]:
    settings = Settings().with_overrides(stack={"state_dir": tmp_path})
    registry = ModelRegistry(settings)
    for version in ("a", "b"):
        for kind in ("ranker", "retriever"):
            staging = registry.new_version_dir(kind, version)
            (staging / "w").write_text(version)
            registry.publish(kind, staging, Manifest(kind=kind, version=version))
            if version == "a":
                registry.promote(kind, "a")
    return settings.with_overrides(rollout={"min_impressions": 500}), registry


def test_stages_then_promotion(tmp_path):
    settings, registry = registry_with(tmp_path)
    shown = [figures(side(100, 10), side(900, 90)), figures(side(1000, 100), side(5000, 500))]
    seen = iter(shown + shown[1:] * 3)
    outbox = Outbox()
    c = RolloutController(settings, registry, outbox, lambda state, until: next(seen), lambda: NOW)
    c.start("b")
    assert registry.canary("ranker").share == 0.05
    assert c.step()[0].action == "wait" and registry.canary("ranker").share == 0.05
    verdict, change = c.step()
    assert verdict.action == "advance" and change.rollout["share"] == 0.25
    assert registry.canary("ranker").share == 0.25
    verdict, change = c.step()
    assert change.action == "promote" and change.version == "b"
    assert registry.promoted("ranker").version == "b" == registry.promoted("retriever").version
    assert registry.canary("ranker") is None and c.step() is None
    actions = [(ch.kind, ch.action, (ch.rollout or {}).get("share")) for ch in outbox]
    assert actions == [
        ("ranker", "canary", 0.05),
        ("ranker", "canary", 0.25),
        ("ranker", "promote", 1.0),
        ("retriever", "promote", 1.0),
    ]


def test_regression_rolls_back_with_its_reason(tmp_path):
    settings, registry = registry_with(tmp_path)
    outbox = Outbox()
    worse = figures(side(1000, 30), side(5000, 500))
    c = RolloutController(settings, registry, outbox, lambda state, until: worse, lambda: NOW)
    c.start("b")
    verdict, change = c.step()
    assert verdict.action == "rollback" and change.action == "rollback"
    assert change.version == "a" and change.rollout["candidate"] == "b"
    assert "CTR 3.00%" in change.rollout["reason"]
    assert registry.canary("ranker") is None and registry.promoted("ranker").version == "a"
    row = {r.version: r for r in version_status(registry, "ranker")}["b"]
    assert row.stage == "rolled back" and "CTR 3.00%" in row.reason


def test_a_hand_promotion_ends_the_canary(tmp_path):
    settings, registry = registry_with(tmp_path)
    c = RolloutController(settings, registry, Outbox(), lambda *a: None, lambda: NOW)
    c.start("b")
    registry.promote("ranker", "b")
    verdict, change = c.step()
    assert verdict.action == "rollback" and "promoted ranker changed" in verdict.reason
    assert change.version == "b" and change.rollout["candidate"] == "b"


class Board:
    def write(self, fields):
        pass


@pytest.mark.parametrize(
    ("rollout", "passed", "stage", "actions"),
    [
        ("promote", True, "promoted", [("ranker", "promote"), ("retriever", "promote")]),
        ("canary", True, "canary", [("ranker", "canary")]),
        ("canary", False, "gate-failed", []),
    ],
)
def test_the_trainer_releases_a_passed_candidate_by_its_rollout_setting(
    tmp_path, rollout, passed, stage, actions
):
    from streamrec.models.retrain import GateOutcome
    from streamrec.processors.trainer import Trainer

    settings, registry = registry_with(tmp_path)
    settings = settings.with_overrides(trainer={"rollout": rollout})
    outbox = Outbox()
    trainer = Trainer(settings, registry, outbox, Board(), "g")
    verdict = GateOutcome(passed=passed, reason="r", holdout_from=0, holdout_events=1)
    assert trainer.release("b", verdict, has_promoted=True) == stage
    assert [(c.kind, c.action) for c in outbox] == actions
    assert (registry.canary("ranker") is not None) == (stage == "canary")
    assert registry.promoted("ranker").version == ("b" if stage == "promoted" else "a")
