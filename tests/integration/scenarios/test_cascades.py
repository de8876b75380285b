"""Each cascade scenario, a few seconds per mode on the real stack and serving worker: naive
mode (StreamRec with the protection switched off through settings) does worse on the
scenario's figure than StreamRec, and the report is written from the run."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamrec.infra.settings import Settings
from streamrec.scenarios.cascades import SCENARIOS
from streamrec.scenarios.report import ScenarioResult, direction_holds, write_report
from streamrec.scenarios.runner import run
from streamrec.scenarios.seed import MovieLens

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def by_mode(result: ScenarioResult) -> dict[str, dict[str, float]]:
    return {r.mode: r.summary for r in result.runs}


def test_llm_on_the_request_path_makes_the_peak_wait_for_the_quota(
    scenario_stack: Settings, movielens: MovieLens, tmp_path: Path
):
    result = run(scenario_stack, SCENARIOS["llm-rate-limit"], duration_s=8, seed=1, ml=movielens)
    naive, ours = by_mode(result)["naive"], by_mode(result)["streamrec"]
    assert direction_holds(result) is True
    assert ours["p99_ms"] * 3 < naive["p99_ms"]
    assert ours["error_rate"] < naive["error_rate"]
    assert ours["answered"] > 0.9
    # The naive worker's LLM calls went out on the request path; the quota was what it was.
    assert naive["llm_calls"] > 0
    page = write_report(tmp_path / "report", result)
    assert "llm-rate-limit-llm_calls.png" in page.read_text()

