"""The LLM on the request path, for comparison only (`serving.explain_llm_inline`).

StreamRec never calls the LLM while answering (ADR 0062): the enricher writes explanations
to Redis off the path and serving reads them. This explainer does what a naive design does
instead, so a scenario can measure the difference on the same worker: after the usual
cached-or-template explanations, it asks the LLM (through the platform's own `LLMClient`,
paced to `llm.requests_per_minute`) for the top item of every answer in the batch, and the
answer waits for it. A failed call keeps the template. Never on by default.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import httpx

from streamrec.infra.settings import LLMSettings
from streamrec.llm.client import LLMClient
from streamrec.llm.errors import LLMError
from streamrec.llm.requests import explanation_request, prompt_for
from streamrec.serving.item_catalog import ItemCatalog


class InlineLLMExplainer:
    """Wraps the batch explainer (`serving.worker.Explainer`); same `explain_many` contract."""

    def __init__(
        self,
        inner: Any,
        catalog: ItemCatalog,
        settings: LLMSettings,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.inner = inner
        self.catalog = catalog
        self.client = LLMClient(settings, transport=transport)
        self.calls = 0
        self.failures = 0

    async def _top_text(self, user_id: str, ids: list[str], recent: list[str]) -> str | None:
        if not ids:
            return None
        info = self.catalog.get(ids[0])
        because = self.catalog.get(recent[-1]) if recent else None
        request = explanation_request(
            user_id,
            ids[0],
            title=info.title if info is not None else ids[0],
            because=because.title if because is not None else "",
            genres=list(info.genres) if info is not None else None,
        )
        self.calls += 1
        try:
            return (await self.client.complete(prompt_for(request))).text
        except LLMError:
            self.failures += 1
            return None

    async def explain_many(
        self, requests: Sequence[tuple[str, list[str], list[str]]], lefts_s: Sequence[float]
    ) -> tuple[list[list[str | None]], set[str] | None]:
        texts, gone = await self.inner.explain_many(requests, lefts_s)
        tops = await asyncio.gather(*(self._top_text(u, ids, r) for u, ids, r in requests))
        for member, top in zip(texts, tops, strict=True):
            if top is not None and member:
                member[0] = top
        return texts, gone

    async def aclose(self) -> None:
        await self.client.aclose()
