"""The map the dashboard draws: topics, processors, serving and stores, and what flows where.

Declared once, like the topic contracts. Node ids are `topic:<name>`, `worker:<name>` (the
name a worker registers with `streams.metrics`, also its consumer group `streamrec-<name>`)
and `store:<name>`. `col`/`row` place the node on the page's grid (left to right: input
topics, first processors, derived topics, second processors, stores).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from streamrec.topics import (
    CACHE_INVALIDATIONS,
    CANDIDATES,
    CATALOG_ITEMS,
    CATALOG_VECTORS,
    EVENTS_INTERACTIONS,
    FEATURES_CHANGED,
    LLM_ENRICH_REQUESTS,
    LLM_ENRICH_RESULTS,
    RECS_REQUESTS,
    RECS_RESPONSES,
    RECS_SERVED,
    REGISTRY_CHANGES,
    TopicSpec,
)

NodeKind = Literal["topic", "worker", "store"]


class Node(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    kind: NodeKind
    label: str
    col: float
    row: float

    @property
    def name(self) -> str:
        return self.id.split(":", 1)[1]


class Edge(BaseModel):
    model_config = ConfigDict(frozen=True)

    source: str
    target: str


def _t(spec: TopicSpec, col: float, row: float) -> Node:
    return Node(id=f"topic:{spec.name}", kind="topic", label=spec.name, col=col, row=row)


def _w(name: str, col: float, row: float) -> Node:
    return Node(id=f"worker:{name}", kind="worker", label=name, col=col, row=row)


def _s(name: str, label: str, col: float, row: float) -> Node:
    return Node(id=f"store:{name}", kind="store", label=label, col=col, row=row)


NODES: tuple[Node, ...] = (
    _t(CATALOG_ITEMS, 0, 0),
    _t(EVENTS_INTERACTIONS, 0, 3),
    _t(REGISTRY_CHANGES, 0, 5.5),
    _t(LLM_ENRICH_REQUESTS, 0, 1.5),
    _t(RECS_REQUESTS, 0, 7.5),
    _w("content-pipeline", 1, 0),
    _w("llm-enricher", 1, 1.5),
    _w("session-features", 1, 2.5),
    _w("trending", 1, 3.5),
    _w("interaction-counter", 1, 4.5),
    _w("serving", 1, 7.5),
    _t(CATALOG_VECTORS, 2, 0),
    _t(LLM_ENRICH_RESULTS, 2, 1.5),
    _t(FEATURES_CHANGED, 2, 2.5),
    _t(RECS_SERVED, 2, 6.7),
    _t(RECS_RESPONSES, 2, 8.3),
    _w("vector-indexer", 3, 0),
    _w("invalidation", 3, 1.5),
    _w("candidates", 3, 3),
    _w("analytics-sink", 3, 5.5),
    _t(CACHE_INVALIDATIONS, 4, 1.5),
    _t(CANDIDATES, 4, 3),
    _s("index", "vector index", 5, 0),
    _s("redis", "redis (online store)", 5, 3.5),
    _s("kafka", "kafka (broker)", 5, 7.5),
    _s("clickhouse", "clickhouse", 5, 5.5),
)

_FLOWS: tuple[tuple[str, str], ...] = (
    ("topic:catalog.items", "worker:content-pipeline"),
    ("worker:content-pipeline", "topic:catalog.vectors"),
    ("topic:catalog.vectors", "worker:vector-indexer"),
    ("worker:vector-indexer", "store:index"),
    ("topic:catalog.items", "worker:llm-enricher"),
    ("topic:llm.enrich.requests", "worker:llm-enricher"),
    ("worker:llm-enricher", "topic:llm.enrich.results"),
    ("worker:llm-enricher", "store:redis"),
    ("topic:events.interactions", "worker:session-features"),
    ("worker:session-features", "topic:features.changed"),
    ("worker:session-features", "store:redis"),
    ("topic:events.interactions", "worker:trending"),
    ("worker:trending", "store:redis"),
    ("topic:events.interactions", "worker:interaction-counter"),
    ("worker:interaction-counter", "store:redis"),
    ("topic:catalog.vectors", "worker:invalidation"),
    ("topic:registry.changes", "worker:invalidation"),
    ("topic:events.interactions", "worker:invalidation"),
    ("worker:invalidation", "topic:cache.invalidations"),
    ("worker:invalidation", "store:redis"),
    ("topic:features.changed", "worker:candidates"),
    ("topic:cache.invalidations", "worker:candidates"),
    ("worker:candidates", "topic:candidates"),
    ("worker:candidates", "store:redis"),
    ("topic:recs.requests", "worker:serving"),
    ("store:redis", "worker:serving"),
    ("worker:serving", "topic:recs.responses"),
    ("worker:serving", "topic:recs.served"),
    ("topic:events.interactions", "worker:analytics-sink"),
    ("topic:recs.served", "worker:analytics-sink"),
    ("topic:catalog.items", "worker:analytics-sink"),
    ("worker:analytics-sink", "store:clickhouse"),
)

EDGES: tuple[Edge, ...] = tuple(Edge(source=a, target=b) for a, b in _FLOWS)
BY_ID: dict[str, Node] = {n.id: n for n in NODES}
WORKER_NAMES: tuple[str, ...] = tuple(n.name for n in NODES if n.kind == "worker")


def consumer_group(worker: str) -> str:
    """The default consumer group of a worker (processors.registry's convention)."""
    return f"streamrec-{worker}"
