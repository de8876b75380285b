"""Retraining without a person: when to retrain, what to train on, and the gate's hold-out.

Responsibilities:
- `RetrainTrigger`: due on a schedule (`interval_s` since the last training), or once
  `min_new_interactions` arrived since the log offsets the last candidate was trained at,
  never two trainings closer than `min_gap_s`; a pure function of (now, counts);
- `holdout_cutoff` / `split_at`: the fresh hold-out is every interaction at or after a
  cut-off time, the newest `holdout_share` of the log, and never before the promoted model's
  own cut-off, so neither model trained on it; the candidate trains only on what lies
  strictly before the cut-off;
- `holdout_set` and `judge`: the hold-out as (user features at the cut-off, items to
  exclude, targets) for the warm users, both models' top-20 (retriever + ranker, the served
  pipeline) and `gate.gate`'s verdict, wrapped in a `GateOutcome` with its reason;
- `shuffle_items`: the debug hook that makes a deliberately worse training log.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from streamrec.infra.settings import TrainerSettings
from streamrec.models.evaluate import TwoTowerRankerScorer, top_lists
from streamrec.models.features import UserFeatures
from streamrec.models.gate import GateVerdict, gate
from streamrec.models.items import ItemTable
from streamrec.models.ranker import RankerModel
from streamrec.models.registry import ModelRegistry

# Manifest fields the trainer writes (and `streamrec models status` reads).
TRAINED_BEFORE = "trained_before"  # epoch seconds: every training event is strictly before
LOG_OFFSETS = "log_offsets"  # events.interactions partition -> next offset, when trained
STAGE = "stage"  # gate-passed | gate-failed | canary N% | rolled back (promotion: the pointer)
GATE = "gate"


@dataclass(frozen=True)
class Trigger:
    reason: str  # "first" | "schedule" | "interactions"
    new_interactions: int


class RetrainTrigger:
    """When to retrain: `due(now, new)` with `new` the interactions since the last training."""

    def __init__(self, cfg: TrainerSettings, last_trained: float | None) -> None:
        self.cfg = cfg
        self.last_trained = last_trained  # None: no version yet

    def due(self, now: float, new_interactions: int) -> Trigger | None:
        if new_interactions <= 0:
            return None  # nothing new to learn from, whatever the clock says
        if self.last_trained is None:
            return Trigger("first", new_interactions)
        since = now - self.last_trained
        if since < self.cfg.min_gap_s:
            return None
        if since >= self.cfg.interval_s:
            return Trigger("schedule", new_interactions)
        n = self.cfg.min_new_interactions
        if n and new_interactions >= n:
            return Trigger("interactions", new_interactions)
        return None

    def trained(self, now: float) -> None:
        self.last_trained = now


def new_since(positions: Mapping[int, int], trained_at: Mapping[int, int]) -> int:
    """Interactions read past the offsets a version was trained at (per partition)."""
    return sum(max(0, end - int(trained_at.get(p, 0))) for p, end in positions.items())


def holdout_cutoff(events: pd.DataFrame, share: float, not_before: int | None = None) -> int:
    """The hold-out's first timestamp: the newest `share` of events, but never before
    `not_before` (the promoted model's own cut-off: it must not have trained on them)."""
    ts = np.sort(events["ts"].to_numpy())
    if not len(ts):
        return int(not_before or 0)
    cut = int(ts[min(len(ts) - 1, math.floor(len(ts) * (1.0 - share)))])
    return max(cut, int(not_before)) if not_before is not None else cut


def split_at(events: pd.DataFrame, cutoff: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(strictly before `cutoff`: training, at or after it: the hold-out)."""
    before = events["ts"].to_numpy() < cutoff
    return events[before].reset_index(drop=True), events[~before].reset_index(drop=True)


def trained_before(manifest_extra: Mapping[str, Any], data_window: Mapping[str, Any]) -> int:
    """A version's cut-off: its own, or (a version `streamrec train` made on a per-user
    split) one past the newest event it trained on, so the hold-out cannot contain it."""
    if TRAINED_BEFORE in manifest_extra:
        return int(manifest_extra[TRAINED_BEFORE])
    ends = [int(data_window[p][1]) for p in ("train", "valid") if data_window.get(p)]
    return max(ends) + 1 if ends else 0


def shuffle_items(events: pd.DataFrame, seed: int) -> pd.DataFrame:
    """For tests and comparison only: every item id replaced by another one of the log (a
    seeded permutation of its ids), so the model learns each item's popularity and
    co-occurrences on the wrong item (a deliberately worse candidate). Permuting the rows'
    labels instead would keep each item's count, and the model would still be as good as
    popularity."""
    out = events.copy()
    ids = np.sort(out["item_id"].unique())
    mapping = dict(zip(ids, np.random.default_rng(seed).permutation(ids), strict=True))
    out["item_id"] = out["item_id"].map(mapping)
    return out


@dataclass
class HoldOut:
    users: list[UserFeatures]
    exclude: list[np.ndarray]
    targets: list[np.ndarray]


def holdout_set(
    before: pd.DataFrame,
    after: pd.DataFrame,
    table: ItemTable,
    max_users: int,
    seed: int,
) -> HoldOut:
    """Users with history before the cut-off and a catalog item after it: their features at
    the cut-off (every earlier event, oldest first), those items excluded, the later items
    they had not seen as targets. A seeded sample of `max_users` when there are more."""
    history = dict(tuple(before.sort_values(["ts", "seq"], kind="stable").groupby("user_id")))
    later = dict(tuple(after.groupby("user_id")))
    users = sorted(u for u in later if u in history)
    if len(users) > max_users:
        rng = np.random.default_rng(seed)
        users = sorted(rng.choice(users, size=max_users, replace=False).tolist())
    out = HoldOut([], [], [])
    for user in users:
        hist = history[user]
        seen = hist["item_id"].tolist()
        targets = np.setdiff1d(table.indices(later[user]["item_id"].tolist()), table.indices(seen))
        if not len(targets):
            continue
        ratings = hist["rating"].dropna()
        out.users.append(
            UserFeatures(
                user_id=str(user),
                recent_items=[str(i) for i in seen],
                n_interactions=len(hist),
                mean_rating=float(ratings.mean()) if len(ratings) else None,
            )
        )
        out.exclude.append(table.indices(seen))
        out.targets.append(targets)
    return out


class GateOutcome(BaseModel):
    """What goes into the manifest (`gate`) and onto registry.changes (`RegistryChange.gate`)."""

    passed: bool
    reason: str
    against: str | None = None  # the promoted version compared with
    holdout_from: int  # epoch seconds: the cut-off
    holdout_events: int
    verdict: GateVerdict | None = None


def _tops_in(table: ItemTable, model: RankerModel, holdout: HoldOut, depth: int) -> np.ndarray:
    """`model`'s top-20 for the hold-out, as dense indices of `table` (0 = not in it)."""
    own = [model.table.indices([str(i) for i in u.recent_items]) for u in holdout.users]
    top = top_lists(TwoTowerRankerScorer(model, depth), holdout.users, own)
    if model.table is table:
        return top
    ids = [[model.table.item_id(int(i)) if i > 0 else "" for i in row] for row in top]
    return np.asarray([table.indices_or_zero(row) for row in ids], dtype=np.int64)


def judge(
    candidate: RankerModel,
    promoted: RankerModel | None,
    before: pd.DataFrame,
    after: pd.DataFrame,
    cutoff: int,
    cfg: TrainerSettings,
    depth: int,
    seed: int,
) -> GateOutcome:
    """The gate on the fresh hold-out (`after`, every event at or after `cutoff`)."""
    base = {"holdout_from": cutoff, "holdout_events": len(after)}
    if promoted is None:
        return GateOutcome(passed=True, reason="no promoted model to compare with", **base)
    base["against"] = promoted.version
    table = candidate.table
    holdout = holdout_set(before, after, table, cfg.holdout_max_users, seed)
    if len(holdout.users) < cfg.holdout_min_users:
        return GateOutcome(
            passed=False,
            reason=f"hold-out too small: {len(holdout.users)} users with fresh interactions "
            f"(at least {cfg.holdout_min_users} needed)",
            **base,
        )
    verdict = gate(
        _tops_in(table, candidate, holdout, depth),
        _tops_in(table, promoted, holdout, depth),
        holdout.targets,
        margin=cfg.gate_margin,
        samples=cfg.gate_samples,
        confidence=cfg.gate_confidence,
        seed=seed,
    )
    return GateOutcome(passed=verdict.passed, reason=gate_reason(verdict), verdict=verdict, **base)


def gate_reason(verdict: GateVerdict) -> str:
    """The verdict in words. A metric passes when the interval of candidate - promoted stays
    above -margin, so a failure says the candidate may be that much worse, not that its
    mean is lower (a better mean on a small hold-out fails too)."""
    if verdict.passed:
        return "not worse than the promoted model beyond the margin"
    failed = [m for m, c in verdict.metrics.items() if not c.passed]
    return (
        f"may be worse than the promoted model beyond the margin on {', '.join(failed)}: "
        f"the {verdict.confidence:.0%} interval of the difference reaches below "
        f"-{verdict.margin:g}"
    )


class VersionStatus(BaseModel):
    """Where one version stands (`streamrec models status`)."""

    kind: str
    version: str
    created_at: str
    trigger: str  # what made it: "first" | "schedule" | "interactions" | "manual"
    stage: str  # promoted | previously promoted | gate-passed | gate-failed | published
    gate: str  # passed | failed | "" (not gated: `streamrec train`)
    reason: str
    figures: dict[str, str]  # per metric: "cand / prom, diff [ci_low, ci_high]"


def version_status(registry: ModelRegistry, kind: str) -> list[VersionStatus]:
    """Every version of `kind`, oldest first, with its gate verdict and its stage."""
    promoted = registry.promoted(kind)
    history = set(registry.history(kind))
    rows = []
    for v in registry.list(kind):
        extra = v.manifest.model_extra or {}
        outcome = GateOutcome.model_validate(extra[GATE]) if GATE in extra else None
        if promoted is not None and v.version == promoted.version:
            stage = "promoted"
        elif v.version in history:
            stage = "previously promoted"
        else:
            stage = str(extra.get(STAGE, "published"))
        figures = {}
        if outcome is not None and outcome.verdict is not None:
            for m, c in outcome.verdict.metrics.items():
                figures[m] = (
                    f"{c.candidate:.4f} / {c.promoted:.4f}, {c.diff:+.4f} "
                    f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}]"
                )
        reason = "" if outcome is None else outcome.reason
        rollout = extra.get("rollout")
        if isinstance(rollout, dict) and rollout.get("reason"):  # the canary's latest decision
            reason = f"{reason}; rollout: {rollout['reason']}" if reason else rollout["reason"]
        rows.append(
            VersionStatus(
                kind=kind,
                version=v.version,
                created_at=v.manifest.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                trigger=str(extra.get("trigger", "manual")),
                stage=stage,
                gate="" if outcome is None else ("passed" if outcome.passed else "failed"),
                reason=reason,
                figures=figures,
            )
        )
    return rows
