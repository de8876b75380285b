"""Every topic of StreamRec: the one contract between parts.

Import specs and schemas from here rather than spelling topic names as strings.
"""

from topics.base import Event, TopicSpec
from topics.cache_invalidations import CACHE_INVALIDATIONS, RefreshCommand
from topics.candidates import CANDIDATES, CandidatesUpdated
from topics.catalog_items import CATALOG_ITEMS, CatalogItem
from topics.catalog_vectors import CATALOG_VECTORS, ItemVector
from topics.dead_letters import DEAD_LETTERS, DeadLetter
from topics.events_interactions import EVENTS_INTERACTIONS, Interaction
from topics.features_changed import FEATURES_CHANGED, FeaturesChanged
from topics.llm_enrichment import (
    LLM_ENRICH_REQUESTS,
    LLM_ENRICH_RESULTS,
    EnrichRequest,
    EnrichResult,
)
from topics.recs_requests import RECS_REQUESTS, RecRequest
from topics.recs_responses import RECS_RESPONSES, RecommendedItem, RecResponse
from topics.recs_served import RECS_SERVED, Impression
from topics.registry_changes import REGISTRY_CHANGES, RegistryChange

ALL_TOPICS: tuple[TopicSpec, ...] = (
    CATALOG_ITEMS,
    CATALOG_VECTORS,
    EVENTS_INTERACTIONS,
    FEATURES_CHANGED,
    CANDIDATES,
    CACHE_INVALIDATIONS,
    REGISTRY_CHANGES,
    RECS_REQUESTS,
    RECS_RESPONSES,
    RECS_SERVED,
    LLM_ENRICH_REQUESTS,
    LLM_ENRICH_RESULTS,
    DEAD_LETTERS,
)

BY_NAME: dict[str, TopicSpec] = {t.name: t for t in ALL_TOPICS}

__all__ = [
    "ALL_TOPICS",
    "BY_NAME",
    "CACHE_INVALIDATIONS",
    "CANDIDATES",
    "CATALOG_ITEMS",
    "CATALOG_VECTORS",
    "DEAD_LETTERS",
    "EVENTS_INTERACTIONS",
    "FEATURES_CHANGED",
    "LLM_ENRICH_REQUESTS",
    "LLM_ENRICH_RESULTS",
    "RECS_REQUESTS",
    "RECS_RESPONSES",
    "RECS_SERVED",
    "REGISTRY_CHANGES",
    "CandidatesUpdated",
    "CatalogItem",
    "DeadLetter",
    "EnrichRequest",
    "EnrichResult",
    "Event",
    "FeaturesChanged",
    "Impression",
    "Interaction",
    "ItemVector",
    "RecRequest",
    "RecResponse",
    "RecommendedItem",
    "RefreshCommand",
    "RegistryChange",
    "TopicSpec",
]
