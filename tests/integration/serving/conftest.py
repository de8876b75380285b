"""Serving fixtures: a trained ranker (the real model), seeded stores, a server in a thread.

- `trained_ranker`: `models.train.train` with one epoch each, in the data cache
  (train() reuses a version already trained on the same data and settings, so only the first
  run pays for it);
- `install_ranker`: copy that version into a stack's registry (optionally under a new name,
  for promotion tests) and promote it;
- `serving_stack`: a module's own stack with the catalog, trending lists, candidates and user
  features seeded (`scenarios.seed`, the stores' contracts) and the ranker promoted;
- `ServerThread`: uvicorn serving the real app on a free port, in a thread.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from streamrec.infra.processes import free_port
from streamrec.infra.settings import Settings
from streamrec.models.registry import ModelRegistry
from streamrec.scenarios.seed import MovieLens, seed_candidates, seed_popular, seed_user_features
from streamrec.serving.app import create_app
from streamrec.serving.worker import ServingWorker
from streamrec.streams.catalog import publish_items
from tests.kafka_helpers import wait_for

RANKER = "ranker"
USERS_WITH_FEATURES = [str(u) for u in range(1, 41)]
USERS_WITHOUT_FEATURES = [str(u) for u in range(41, 61)]


@pytest.fixture(scope="session")
def movielens(ml100k: Path) -> MovieLens:
    return MovieLens.load(Settings())


@pytest.fixture(scope="session")
def trained_ranker(ml100k: Path) -> Path:
    from streamrec.models.train import train

    base = Settings()
    settings = base.with_overrides(stack={"state_dir": base.data.cache_dir / "test-ranker"})
    result = train(settings, retriever_epochs=1, ranker_epochs=1)
    return result.ranker.path


def install_ranker(settings: Settings, source: Path, version: str | None = None) -> str:
    """Copy a trained version into `settings`' registry (renamed to `version`), promote it."""
    registry = ModelRegistry(settings)
    version = version or source.name
    target = registry.kind_dir(RANKER) / version
    if not target.exists():
        shutil.copytree(source, target)
        manifest = json.loads((target / "manifest.json").read_text())
        manifest["version"] = version
        (target / "manifest.json").write_text(json.dumps(manifest))
    registry.promote(RANKER, version)
    return version


@pytest.fixture(scope="module")
def serving_stack(isolated_stack: Settings, movielens: MovieLens, trained_ranker: Path) -> Settings:
    settings = isolated_stack
    publish_items(settings, movielens.items)
    seed_popular(settings, movielens)
    seed_candidates(settings, movielens, USERS_WITH_FEATURES + USERS_WITHOUT_FEATURES)
    seed_user_features(settings, movielens, USERS_WITH_FEATURES)
    install_ranker(settings, trained_ranker)
    return settings


@dataclass
class ServerThread:
    """The real ASGI app on uvicorn in a thread (httpx's serve_in_thread, for our app)."""

    settings: Settings
    worker: ServingWorker
    topic: bool = False

    def __post_init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(self.settings, self.worker, topic=self.topic),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            loop="asyncio",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        wait_for(lambda: self.server.started, 60, "uvicorn to start")
        wait_for(self.ready, 60, "/readyz to say ready")
        return self

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@contextmanager
def serve(settings: Settings, topic: bool = False, **serving: object) -> Iterator[ServerThread]:
    """A running server for `settings` with some serving fields overridden.

    Budgets are generous by default: these tests check behaviour (levels, shedding, replies) on
    a shared 2-core machine, where a 150 ms budget would turn slow neighbours into fallbacks.
    Latency is measured by benchmarks/serving_bench.py, not here."""
    serving = {"request_budget_ms": 5000, "dependency_cap_ms": 2000, **serving}
    settings = settings.with_overrides(serving=serving)
    with ServerThread(settings, ServingWorker(settings), topic) as server:
        yield server
