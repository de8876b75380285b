"""The rollout controller: a ranker candidate's canary stages, judged live, then promotion or
rollback.

Responsibilities:
- `start(version)`: the candidate serves the first share of `rollout.stages` (5%) of the
  users beside the promoted ranker (the registry's CANARY state, announced on
  registry.changes, which every serving worker follows);
- `step()`: judge the running stage on ClickHouse's figures since it began
  (`analytics.canary`): wait for `rollout.min_impressions` of each side, roll back on a CTR,
  p99 or error-rate regression past its margin, otherwise move to the next share (25%);
  passing the last shared stage promotes the candidate (100%);
- every decision goes on registry.changes (action `canary`, `promote` or `rollback`, with
  `rollout`: candidate, share, reason, figures) and into the candidate's manifest (`stage`,
  `rollout`), which `streamrec models status` shows.

A rollback ends the canary: every user is served by the promoted ranker again at each
worker's next registry check (a registry.changes wake-up, at most `serving.model_poll_s`).

`streamrec models rollout` runs `step()` every `rollout.interval_s`. It reads ClickHouse like
`streamrec report`: an embedded chDB directory only while no other process owns it (the
analytics sink does while it runs), so a continuous rollout needs a ClickHouse server DSN
(ADR 0051).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from streamrec.analytics.canary import CanaryFigures, Judgement, canary_figures, judge
from streamrec.infra.settings import Settings
from streamrec.models.registry import CanaryState, ModelRegistry, RegistryError
from streamrec.topics import RegistryChange
from streamrec.topics.base import utcnow

RANKER = "ranker"
RETRIEVER = "retriever"
STAGE = "stage"
ROLLOUT = "rollout"
log = logging.getLogger(__name__)

Figures = Callable[[CanaryState, datetime], CanaryFigures]


class Outbox(Protocol):
    def send(self, change: RegistryChange) -> None: ...


def clickhouse_figures(settings: Settings, client: Any) -> Figures:
    """Figures over a clickhouse-connect client (chDB or a server)."""

    def figures(state: CanaryState, until: datetime) -> CanaryFigures:
        return canary_figures(
            client, settings, state.version, state.against, state.stage_started_at, until
        )

    return figures


class RolloutController:
    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        outbox: Outbox,
        figures: Figures,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.cfg = settings.rollout
        self.registry = registry
        self.outbox = outbox
        self.figures = figures
        self.clock = clock

    def start(self, version: str) -> RegistryChange:
        """The candidate's first stage (or promotion at once when the only stage is 1.0)."""
        share = self.cfg.stages[0]
        if share >= 1.0:
            return self._promote(version, None, "rollout.stages is [1.0]: promoted directly")
        change = self.registry.set_canary(RANKER, version, share)
        self._record(version, f"canary {share:.0%}", {"share": share, "reason": "started"})
        change = change.model_copy(update={"rollout": {"share": share, "reason": "started"}})
        self.outbox.send(change)
        log.info("rollout: %s serves %.0f%% of users", version, share * 100)
        return change

    def step(self) -> tuple[Judgement, RegistryChange | None] | None:
        """Judge the running stage once; None when no canary runs."""
        state = self.registry.canary(RANKER)
        if state is None:
            return None
        promoted = self.registry.promoted(RANKER)
        if promoted is None or promoted.version != state.against:
            # Someone promoted or rolled back by hand: this canary's control is gone.
            reason = f"the promoted ranker changed to {promoted.version if promoted else None}"
            return self._rollback(state, Judgement(action="rollback", reason=reason), None)
        figures = self.figures(state, self.clock())
        verdict = judge(figures, self.cfg)
        if verdict.action == "wait":
            return verdict, None
        if verdict.action == "rollback":
            return self._rollback(state, verdict, figures)
        later = [s for s in self.cfg.stages if s > state.share]
        share = later[0] if later else 1.0
        if share >= 1.0:
            return verdict, self._promote(state.version, figures, verdict.reason)
        change = self.registry.set_canary(RANKER, state.version, share)
        detail = {"share": share, "reason": verdict.reason, "figures": _dump(figures)}
        self._record(state.version, f"canary {share:.0%}", detail)
        change = change.model_copy(update={"rollout": detail})
        self.outbox.send(change)
        log.info("rollout: %s to %.0f%% (%s)", state.version, share * 100, verdict.reason)
        return verdict, change

    def _promote(self, version: str, figures: CanaryFigures | None, reason: str) -> RegistryChange:
        detail = {"share": 1.0, "reason": reason, "figures": _dump(figures)}
        change = self.registry.promote(RANKER, version).model_copy(update={"rollout": detail})
        self.registry.end_canary(RANKER)
        self._record(version, "promoted", detail)
        self.outbox.send(change)
        # The trainer publishes a retriever of the same version: it follows its ranker.
        try:
            self.registry.get(RETRIEVER, version)
        except RegistryError:
            pass
        else:
            retriever = self.registry.promote(RETRIEVER, version)
            self.outbox.send(retriever.model_copy(update={"rollout": detail}))
        log.info("rollout: %s promoted (%s)", version, reason)
        return change

    def _rollback(
        self, state: CanaryState, verdict: Judgement, figures: CanaryFigures | None
    ) -> tuple[Judgement, RegistryChange]:
        self.registry.end_canary(RANKER)
        detail = {
            "candidate": state.version,
            "share": state.share,
            "reason": verdict.reason,
            "figures": _dump(figures),
        }
        self._record(state.version, "rolled back", detail)
        promoted = self.registry.promoted(RANKER)
        back = promoted.version if promoted else state.against
        change = RegistryChange(
            kind=RANKER, name=RANKER, version=back, action="rollback", rollout=detail
        )
        self.outbox.send(change)
        log.warning("rollout: %s rolled back to %s: %s", state.version, back, verdict.reason)
        return verdict, change

    def _record(self, version: str, stage: str, detail: dict[str, Any]) -> None:
        self.registry.annotate(
            RANKER, version, {STAGE: stage, ROLLOUT: {**detail, "at": self.clock().isoformat()}}
        )


def _dump(figures: CanaryFigures | None) -> dict[str, Any] | None:
    return None if figures is None else figures.model_dump(mode="json")
