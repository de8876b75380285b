"""The known workers: `streamrec worker NAME` imports exactly one of these modules.

Each module exposes `build(settings, group=None) -> faust.App`. Listed explicitly (no
autodiscovery) so starting one worker never imports every processor.
"""

from __future__ import annotations

import importlib

import faust

from infra.settings import Settings
from streamrec.errors import ConfigError

WORKERS: dict[str, str] = {
    "interaction-counter": "processors.interaction_counter",
    "session-features": "processors.session_features",
    "trending": "processors.trending",
    "content-pipeline": "processors.content_pipeline",
    "vector-indexer": "processors.vector_indexer",
    "analytics-sink": "processors.analytics_sink",
    "invalidation": "processors.invalidation",
    "llm-enricher": "processors.llm_enricher",
    "candidates": "processors.candidates",
}


def build_worker(name: str, settings: Settings, group: str | None = None) -> faust.App:
    try:
        module = importlib.import_module(WORKERS[name])
    except KeyError:
        raise ConfigError(f"unknown worker {name!r}; known: {', '.join(sorted(WORKERS))}") from None
    return module.build(settings, group=group)
