"""A local LLM provider process per test module, scaled down in time (see each module)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from streamrec.infra.processes import free_port
from streamrec.infra.settings import Settings
from streamrec.llm.local_provider import LocalProvider

SECRET = "sk-streamrec-test-7f3a9c1e5b"


def provider_settings(state_dir: Path, **llm: object) -> Settings:
    port = free_port()
    fields: dict[str, object] = {
        "local_port": port,
        "base_url": f"http://127.0.0.1:{port}/v1",
        "api_key": SecretStr(SECRET),
        "local_api_key": SecretStr(SECRET),
        **llm,
    }
    return Settings().with_overrides(stack={"state_dir": state_dir}, llm=fields)


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalProvider]:
    """The provider at 60 requests per 1 s window (500/min scaled 7.2x faster), 20-200 ms."""
    settings = provider_settings(
        tmp_path_factory.mktemp("llm"),
        local_limit=60,
        local_window_s=1.0,
        local_latency_min_ms=20,
        local_latency_max_ms=200,
    )
    with LocalProvider(settings) as p:
        yield p
