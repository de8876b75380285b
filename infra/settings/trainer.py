"""The trainer worker: when it retrains, how much CPU it may take, and the evaluation gate.

Kept apart from `ModelSettings` on purpose: a model version's name hashes `ModelSettings`
(`models/train.py:_config_hash`), and how often or how politely a model is retrained must
not change which model a given log and model configuration produce.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from streamrec.infra.settings.base import Section


class TrainerSettings(Section):
    """`streamrec worker trainer`: triggers, CPU bounds, hold-out and gate."""

    interval_s: float = Field(86_400.0, gt=0, description="retrain at least this often (daily)")
    min_new_interactions: int = Field(
        10_000, ge=0, description="retrain once this many interactions arrived; 0 = off"
    )
    min_gap_s: float = Field(600.0, ge=0, description="never start two trainings closer than")
    poll_s: float = Field(0.5, gt=0, description="how long one read of the log waits")
    threads: int = Field(1, ge=1, description="torch threads while training")
    nice: int = Field(10, ge=0, le=19, description="the worker's niceness (0 = as started)")
    cpus: list[int] = Field(
        default_factory=list,
        description="CPU ids the worker may run on (sched_setaffinity); empty = any",
    )
    features: Literal["log", "feast"] = Field(
        "log",
        description="log: point in time from the log; feast: the Feast offline store, "
        "refreshed from the log (features backfill) before each training",
    )
    retriever_epochs: int = Field(0, ge=0, description="0: models.retriever_epochs")
    ranker_epochs: int = Field(0, ge=0, description="0: models.ranker_epochs")
    split_evaluation: bool = Field(
        True, description="also evaluate on the per-user test split (the manifest's metrics)"
    )
    holdout_share: float = Field(
        0.1, gt=0, lt=1, description="the newest share of the log kept out of training"
    )
    holdout_min_users: int = Field(20, ge=1, description="fewer hold-out users: no verdict")
    holdout_max_users: int = Field(2000, ge=1, description="a seeded sample above this")
    gate_margin: float = Field(0.01, ge=0, description="allowed loss on NDCG@20 and Recall@20")
    gate_confidence: float = Field(0.95, gt=0, lt=1)
    gate_samples: int = Field(1000, ge=10, description="bootstrap resamples over users")
    promote: bool = Field(
        True, description="promote a candidate that passes; off: mark it passed only"
    )
    rollout: Literal["promote", "canary"] = Field(
        "promote",
        description="what a passed candidate gets: promotion at once, or a canary at the "
        "first of rollout.stages that `streamrec models rollout` judges on live figures",
    )
    debug_shuffle_items: bool = Field(
        False,
        description="for tests and comparison only: train the candidate on a log whose item "
        "ids are shuffled across events (a deliberately worse model the gate must stop)",
    )
