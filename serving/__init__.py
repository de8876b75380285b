"""The serving worker: HTTP API and request-topic consumer around one core.

| module | concern |
| --- | --- |
| `core` | the request path: cache, admission per request; reads, rank, re-rank, answer per batch |
| `app`, `body_limit`, `schemas`, `validation` | HTTP (FastAPI): routes, 413 limit, models, 422s |
| `topic_server` | recs.requests -> replies on allow-listed reply topics; dead letters |
| `worker`, `runner`, `process` | composition root, `streamrec serve`, the child process |
| `admission`, `deadlines`, `breakers`, `fallback` | never cascade: bounds, budgets, levels |
| `batcher`, `model_manager`, `ranker_adapter`, `shadow` | batched ranking, swaps, shadow, canary |
| `rerank`, `cache` (+ `xfetch`), `explanations`, `answer` | the answer's shape and bytes |
| `reference_path` | the per-request path, kept only for the batch path's golden test |
| `ports`, `redis_stores`, `feature_store`, `item_catalog`, `memory` | I/O behind interfaces |
| `impressions`, `metrics`, `errors`, `seed` | recs.served, Prometheus, exceptions, inputs |
"""
