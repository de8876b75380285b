"""Canary rollout of a ranker: its stages, when a stage is judged, and what rolls it back."""

from __future__ import annotations

from pydantic import Field, field_validator

from streamrec.infra.settings.base import Section


class RolloutSettings(Section):
    """The rollout controller (`streamrec models rollout`): shares, evidence, rollback margins."""

    stages: list[float] = Field(
        default_factory=lambda: [0.05, 0.25, 1.0],
        description="shares of users the canary serves, in order; the last (1.0) is promotion",
    )
    min_impressions: int = Field(
        2000, ge=1, description="impressions of each side in a stage before it is judged"
    )
    ctr_margin: float = Field(
        0.0,
        ge=0,
        description="roll back when the 95% CI of canary CTR - control CTR lies below -margin",
    )
    p99_margin_ms: float = Field(
        25.0, ge=0, description="roll back when canary p99 latency exceeds control's by more"
    )
    error_margin: float = Field(
        0.01,
        ge=0,
        description="roll back when the 95% CI of canary error rate - control error rate "
        "(answers at SIMPLE_RANKING, or answered by the promoted ranker after the canary "
        "failed) lies above +margin",
    )
    interval_s: float = Field(10.0, gt=0, description="the controller judges this often")

    @field_validator("stages")
    @classmethod
    def _increasing_to_one(cls, v: list[float]) -> list[float]:
        if not v or v[-1] != 1.0 or any(not 0 < s <= 1 for s in v) or v != sorted(set(v)):
            raise ValueError("stages must increase within (0, 1] and end at 1.0")
        return v
