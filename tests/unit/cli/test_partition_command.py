"""`streamrec partition cut | heal`: which node it reaches, and what it says when it cannot."""

from __future__ import annotations

from typer.testing import CliRunner

from streamrec.cli import app
from streamrec.infra import netns

runner = CliRunner()


def _env(tmp_path) -> dict[str, str]:
    return {
        "STREAMREC_STACK__STATE_DIR": str(tmp_path),
        "STREAMREC_STACK__KAFKA_BROKERS": "3",
        "STREAMREC_STACK__KAFKA_NETNS": "true",
    }


def test_a_node_the_stack_does_not_have_is_named_and_refused(tmp_path):
    result = runner.invoke(app, ["partition", "cut", "5"], env=_env(tmp_path))
    assert result.exit_code != 0
    assert "there is no Kafka node 5: the stack has 3" in str(result.exception)


def test_cut_for_a_while_heals_the_node_after_it(tmp_path, monkeypatch):
    done: list[tuple[str, int]] = []
    monkeypatch.setattr(netns, "cut", lambda settings, node: done.append(("cut", node)))
    monkeypatch.setattr(netns, "heal", lambda settings, node: done.append(("heal", node)))
    result = runner.invoke(app, ["partition", "cut", "2", "--seconds", "0.1"], env=_env(tmp_path))
    assert result.exit_code == 0, result.output
    assert done == [("cut", 2), ("heal", 2)]
    assert "kafka-2: cut off" in result.output and "healed after 0.1 s" in result.output


def test_cut_without_seconds_says_how_to_heal(tmp_path, monkeypatch):
    monkeypatch.setattr(netns, "cut", lambda settings, node: None)
    result = runner.invoke(app, ["partition", "cut", "3"], env=_env(tmp_path))
    assert result.exit_code == 0, result.output
    assert "streamrec partition heal 3" in result.output
