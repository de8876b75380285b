"""Keeping the promoted retriever loaded: reload when registry.changes (or the pointer) moves.

The registry's PROMOTED pointer is the truth; the registry.changes topic only says "look
now". Checking the pointer too means every instance of a consumer group follows a promotion
even though the one-partition topic reaches only one of them.
"""

from __future__ import annotations

import logging

from streamrec.errors import StreamRecError
from streamrec.infra.settings import Settings
from streamrec.models.registry import ModelRegistry
from streamrec.models.retriever import RetrieverModel

log = logging.getLogger(__name__)
KIND = "retriever"


class RetrieverHolder:
    def __init__(self, settings: Settings) -> None:
        self.registry = ModelRegistry(settings)
        self.device = settings.models.device
        self.model: RetrieverModel | None = None

    @property
    def version(self) -> str | None:
        return self.model.version if self.model else None

    def refresh(self) -> bool:
        """Load the promoted version if it is not the loaded one; True when it changed.

        A version that fails to load is logged and the previous model is kept.
        """
        try:
            promoted = self.registry.promoted(KIND)
        except StreamRecError as exc:
            log.error("cannot read the promoted retriever: %s", exc)
            return False
        if promoted is None or promoted.version == self.version:
            return False
        try:
            self.model = RetrieverModel.load(promoted.path, self.device)
        except StreamRecError as exc:
            log.error("keeping retriever %s: %s", self.version, exc)
            return False
        log.info("retriever %s loaded", self.version)
        return True
