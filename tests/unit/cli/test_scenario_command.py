"""`streamrec scenario`: the list names every scenario with its figure and naive switches, and
a wrong name or mode is refused before any stack is touched."""

from __future__ import annotations

from typer.testing import CliRunner

from streamrec.cli import app
from streamrec.scenarios.cascades import SCENARIOS


def test_list_names_each_scenario_and_what_naive_switches_off():
    result = CliRunner().invoke(app, ["scenario", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for scenario in SCENARIOS.values():
        assert scenario.name in result.output
        for fields in scenario.settings["naive"].values():
            for name in fields:
                assert name in result.output


def test_an_unknown_scenario_or_mode_is_a_usage_error(tmp_path):
    runner = CliRunner()
    env = {"STREAMREC_STACK__STATE_DIR": str(tmp_path / "state")}
    unknown = runner.invoke(app, ["scenario", "run", "no-such"], env=env)
    assert unknown.exit_code == 2 and "unknown scenario" in unknown.output
    bad_mode = runner.invoke(app, ["scenario", "run", "retry-storm", "--mode", "x"], env=env)
    assert bad_mode.exit_code == 2
    assert not (tmp_path / "state").exists()  # nothing was started


def test_every_naive_switch_is_a_setting_off_by_default():
    from streamrec.infra.settings import Settings

    defaults = Settings()
    for scenario in SCENARIOS.values():
        for section, fields in scenario.settings["naive"].items():
            for name, value in fields.items():
                assert getattr(getattr(defaults, section), name) != value
