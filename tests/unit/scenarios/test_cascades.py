"""Naive mode is StreamRec with the scenario's protections switched off, nothing else: the two
modes' settings differ only in the declared switches (and the fresh ports each run takes)."""

from __future__ import annotations

import pytest

from streamrec.infra.settings import Settings
from streamrec.scenarios.cascades import SCENARIOS
from streamrec.scenarios.runner import mode_settings

PORTS = {"serving.port", "llm.local_port", "llm.base_url"}


def flat(settings: Settings) -> dict[str, object]:
    return {
        f"{section}.{k}": v
        for section in type(settings).model_fields
        for k, v in getattr(settings, section).model_dump().items()
    }


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_the_modes_differ_only_in_the_declared_switches(name: str):
    scenario = SCENARIOS[name]
    base = Settings()
    naive, ours = (
        flat(mode_settings(base, scenario, "naive")),
        flat(mode_settings(base, scenario, "streamrec")),
    )
    differ = {k for k in naive if naive[k] != ours[k]} - PORTS
    declared = {f"{s}.{k}" for s, fields in scenario.settings["naive"].items() for k in fields}
    assert differ == declared
    # StreamRec mode is the defaults, apart from what the scenario's world is (its LLM quota).
    common = {f"{s}.{k}" for s, fields in scenario.common.items() for k in fields}
    defaults = flat(base)
    assert {k for k in ours if ours[k] != defaults[k]} - PORTS <= common


def test_the_llm_scenario_points_serving_at_its_own_provider():
    s = mode_settings(Settings(), SCENARIOS["llm-rate-limit"], "naive")
    assert s.llm.base_url == f"http://127.0.0.1:{s.llm.local_port}/v1"
    assert (s.llm.local_limit, s.llm.local_window_s) == (100, 60.0)
