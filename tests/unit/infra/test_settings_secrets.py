"""A bad or misspelled variable never shows its value: not in the error, not in the exception
chain a log handler or an error tracker walks, not in what the `streamrec` CLI prints."""

from __future__ import annotations

import os
import subprocess
import sys
import traceback

import pytest

from streamrec.infra.settings import Settings, SettingsError

SECRET = "sk-live-9d1e4c77aa0b"
CASES = [
    ("STREAMREC_LLM__APIKEY", SECRET),  # misspelled secret
    ("STREAMREC_LLM__API_KEYS", SECRET),
    ("STREAMREC_REDIS__URLL", f"redis://:{SECRET}@127.0.0.1:6379/0"),
    ("STREAMREC_LLM__BURST", SECRET),  # a valid variable, a value of the wrong type
    ("STREAMREC_LLM__TIMEOUT_S", SECRET),
    ("STREAMREC_LLM__LOCAL_FAILURE", SECRET),
    ("STREAMREC_SERVING__PORT", SECRET),
    ("STREAMREC_SERVING__EXPLAIN", SECRET),
    ("STREAMREC_SERVING__REPLY_TOPICS", ""),
]


def _chain(exc: BaseException) -> str:
    """Every exception reachable from `exc`, suppressed contexts included."""
    seen: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(seen) < 10:
        seen.append(repr(current) + str(current) + repr(current.args))
        current = current.__cause__ or current.__context__
    return "\n".join(seen)


@pytest.mark.parametrize(("variable", "value"), CASES, ids=[c[0] for c in CASES])
def test_settings_errors_never_carry_the_value(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        Settings()
    assert variable in str(caught.value)
    printed = "".join(traceback.format_exception(caught.value))
    if value:
        assert SECRET not in printed and SECRET not in _chain(caught.value)
    assert "input_value" not in printed + _chain(caught.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [c for c in CASES if c[1]][:5],
    ids=[c[0] for c in CASES if c[1]][:5],
)
def test_the_cli_says_which_variable_without_its_value(variable, value):
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
    env[variable] = value
    run = subprocess.run(
        [sys.executable, "-m", "streamrec", "config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert variable in out.replace("\n", "") and SECRET not in out
    assert "Traceback" not in out
