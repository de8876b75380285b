"""The known workers: `streamrec worker NAME` imports exactly one of these modules.

Each module exposes `build(settings, group=None) -> faust.App`. Listed explicitly (no
autodiscovery) so starting one worker never imports every processor.
"""

from __future__ import annotations

import importlib

import faust

from streamrec.errors import ConfigError
from streamrec.infra.settings import Settings

WORKERS: dict[str, str] = {
    "interaction-counter": "streamrec.processors.interaction_counter",
    "session-features": "streamrec.processors.session_features",
    "trending": "streamrec.processors.trending",
    "content-pipeline": "streamrec.processors.content_pipeline",
    "vector-indexer": "streamrec.processors.vector_indexer",
    "analytics-sink": "streamrec.processors.analytics_sink",
    "invalidation": "streamrec.processors.invalidation",
    "llm-enricher": "streamrec.processors.llm_enricher",
    "candidates": "streamrec.processors.candidates",
    "trainer": "streamrec.processors.trainer",
}


def build_worker(name: str, settings: Settings, group: str | None = None) -> faust.App:
    try:
        module = importlib.import_module(WORKERS[name])
    except KeyError:
        raise ConfigError(f"unknown worker {name!r}; known: {', '.join(sorted(WORKERS))}") from None
    return module.build(settings, group=group)
