"""Fault injection for crash tests, apart from the production settings.

Nothing here tunes the platform: every field is off by default, production never sets one,
and `Settings.to_env` passes them to a child only when set, so a deployment's environment
never carries them. A test sets one (`with_overrides(faults=...)`) to crash a worker at a
point a SIGKILL from outside cannot hit reliably.
"""

from __future__ import annotations

from pydantic import Field

from streamrec.infra.settings.base import Section


class FaultSettings(Section):
    """Crash points of the workers (0: off), and a canary that fails."""

    sink_exit_after_insert: int = Field(
        0, ge=0, description="analytics sink: exit after the Nth insert, before its commit"
    )
    trending_exit_after_batch: int = Field(
        0,
        ge=0,
        description="trending: exit after the Nth batch's states reach the changelog, "
        "before the batch is acked",
    )
    canary_score_fails: bool = Field(
        False,
        description="serving: every scoring of a batch by the canary ranker raises (after "
        "its warm-up), so its users are answered by the promoted ranker and counted as errors",
    )
