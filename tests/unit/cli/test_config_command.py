"""`streamrec config` prints the settings a process sees, and never a secret; an unknown
`STREAMREC_` variable stops the CLI before any command runs."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from streamrec.cli import app
from streamrec.infra.settings import SettingsError

PLANTED = {
    "STREAMREC_LLM__API_KEY": "sk-planted-llm-4k2",
    "STREAMREC_LLM__LOCAL_API_KEY": "sk-planted-local-9x1",
    "STREAMREC_REDIS__URL": "redis://default:pw-planted-r3d@cache:6380/0",
    "STREAMREC_CLICKHOUSE__DSN": "http://app:pw-planted-ch7@ch:8123/?password=pw-planted-q5",
}
SECRETS = ("sk-planted-llm-4k2", "sk-planted-local-9x1", "pw-planted-r3d", "pw-planted-ch7")
VISIBLE = {"STREAMREC_KAFKA__CLIENT_ID": "client-planted-v8"}


def test_config_prints_every_setting_but_no_secret():
    result = CliRunner().invoke(app, ["config"], env={**PLANTED, **VISIBLE})
    assert result.exit_code == 0, result.output
    out = result.output
    # The planted values reach the command: the non-secret one is printed as set ...
    assert "STREAMREC_KAFKA__CLIENT_ID=client-planted-v8" in out
    assert "STREAMREC_REDIS__URL=redis://default:**********@cache:6380/0" in out
    assert "STREAMREC_LLM__API_KEY=**********" in out
    # ... and no secret is, in any form.
    for secret in (*SECRETS, "pw-planted-q5"):
        assert secret not in out


def test_config_changed_lists_only_what_the_environment_set():
    result = CliRunner().invoke(app, ["config", "--changed"], env={**PLANTED, **VISIBLE})
    assert result.exit_code == 0, result.output
    assert sorted(line.split("=", 1)[0] for line in result.output.splitlines()) == sorted(
        {**PLANTED, **VISIBLE}
    )


def test_an_unknown_variable_stops_the_cli_before_the_command():
    result = CliRunner().invoke(app, ["config"], env={"STREAMREC_SERVNG__PORT": "1"})
    assert result.exit_code != 0
    assert isinstance(result.exception, SettingsError)
    assert "did you mean STREAMREC_SERVING__PORT?" in str(result.exception)
    assert "STREAMREC_" not in result.output  # nothing was printed


def test_the_installed_cli_prints_one_error_line_and_exits_1():
    env = {"PATH": "/usr/bin:/bin", "COLUMNS": "300", "STREAMREC_SERVING__PROT": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "streamrec", "config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "error: unknown environment variable: STREAMREC_SERVING__PROT "
        "(did you mean STREAMREC_SERVING__PORT?)"
    ]
