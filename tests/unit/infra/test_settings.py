from pathlib import Path

import pytest
from pydantic import ValidationError

from streamrec.infra.settings import Settings


def test_environment_with_prefix_and_nested_sections(monkeypatch):
    monkeypatch.setenv("STREAMREC_KAFKA__BOOTSTRAP", "broker:9092")
    monkeypatch.setenv("STREAMREC_STACK__REDIS_PORT", "7000")
    s = Settings()
    assert s.kafka_bootstrap == "broker:9092"
    assert s.redis_url.endswith(":7000/0")


def test_defaults_point_at_the_local_stack():
    s = Settings()
    assert s.kafka_bootstrap == f"127.0.0.1:{s.stack.kafka_port}"
    assert s.clickhouse_dsn.startswith("chdb://")


def test_unknown_keys_are_refused():
    with pytest.raises(ValidationError):
        Settings(stack={"state_dirr": "/tmp/x"})


def test_settings_are_frozen():
    s = Settings()
    with pytest.raises(ValidationError):
        s.stack.redis_port = 1  # type: ignore[misc]


def test_to_env_rebuilds_the_same_settings(monkeypatch):
    s = Settings().with_overrides(
        stack={"state_dir": Path("/tmp/sr"), "kafka_port": 12345}, llm={"api_key": "sk-secret"}
    )
    for key, value in s.to_env().items():
        monkeypatch.setenv(key, value)
    rebuilt = Settings()
    assert rebuilt.stack.kafka_port == 12345
    assert rebuilt.stack.state_dir == Path("/tmp/sr")
    assert rebuilt.llm.api_key.get_secret_value() == "sk-secret"
    assert "sk-secret" not in repr(rebuilt)
