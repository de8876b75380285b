"""`streamrec demo --steps`: which steps a selection runs, and a clear error for no match."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from streamrec.cli import app
from streamrec.demo import STEPS, select_steps


def test_no_selection_runs_every_step():
    assert select_steps(None) == STEPS
    assert select_steps([]) == STEPS


def test_words_select_steps_by_title_in_demo_order():
    chosen = select_steps(["INVALIDATION", " stack "])
    titles = [t for t, _ in chosen]
    assert titles == [t for t, _ in STEPS if "stack" in t.lower() or "invalidation" in t.lower()]
    assert titles[0] == "Local stack" and titles[-1].startswith("Invalidation")


def test_unknown_word_is_an_error_naming_the_steps():
    with pytest.raises(ValueError, match="no demo step matches nosuchstep"):
        select_steps(["nosuchstep"])
    result = CliRunner().invoke(app, ["demo", "--steps", "nosuchstep"])
    assert result.exit_code == 2
    assert "nosuchstep" in result.output and "--steps" in result.output
