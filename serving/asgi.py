"""The ASGI application factory for multi-process serving (`serving.workers` > 1).

uvicorn starts each worker process from an import string, so the app cannot be passed in as
an object: every worker rebuilds the settings from the environment the runner exported
(`Settings.to_env`) and builds its own `ServingWorker` (model, stores, batcher, topic
consumer in the shared group). `uvicorn serving.asgi:create --factory` also runs it directly.
"""

from __future__ import annotations

from fastapi import FastAPI

from streamrec.infra.settings import Settings
from streamrec.serving.app import create_app
from streamrec.serving.worker import set_ranker_threads


def create() -> FastAPI:
    settings = Settings()
    set_ranker_threads(settings)
    return create_app(settings, topic=settings.serving.topic)
