"""Every topic of StreamRec: the one contract between parts.

Import specs and schemas from here rather than spelling topic names as strings.
"""

from streamrec.topics.auth_keys import AUTH_KEYS, ApiKeyRecord
from streamrec.topics.base import Event, TopicSpec
from streamrec.topics.cache_invalidations import CACHE_INVALIDATIONS, RefreshCommand
from streamrec.topics.candidates import CANDIDATES, CandidatesUpdated
from streamrec.topics.catalog_items import CATALOG_ITEMS, CatalogItem
from streamrec.topics.catalog_vectors import CATALOG_VECTORS, ItemVector
from streamrec.topics.dead_letters import DEAD_LETTERS, DeadLetter
from streamrec.topics.events_interactions import EVENTS_INTERACTIONS, Interaction
from streamrec.topics.features_changed import FEATURES_CHANGED, FeaturesChanged
from streamrec.topics.llm_enrichment import (
    LLM_ENRICH_REQUESTS,
    LLM_ENRICH_RESULTS,
    EnrichRequest,
    EnrichResult,
)
from streamrec.topics.recs_requests import RECS_REQUESTS, RecRequest
from streamrec.topics.recs_responses import RECS_RESPONSES, RecommendedItem, RecResponse
from streamrec.topics.recs_served import RECS_SERVED, Impression
from streamrec.topics.registry_changes import REGISTRY_CHANGES, RegistryChange

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
    AUTH_KEYS,
)

BY_NAME: dict[str, TopicSpec] = {t.name: t for t in ALL_TOPICS}

__all__ = [
    "ALL_TOPICS",
    "AUTH_KEYS",
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
    "ApiKeyRecord",
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
