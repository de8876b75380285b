"""The serving worker: HTTP API and request-topic consumer around one core (issue 6).

| module | concern |
| --- | --- |
| `core` | the request path: cache, admission, parallel reads, rank, re-rank, answer |
| `app`, `body_limit`, `schemas` | HTTP (FastAPI): routes, 413 limit, request/answer models |
| `topic_server` | recs.requests -> replies on the request's reply topic; dead letters |
| `worker`, `runner`, `process` | composition root, `streamrec serve`, the child process |
| `admission`, `deadlines`, `breakers`, `fallback` | never cascade: bounds, budgets, levels |
| `batcher`, `model_manager`, `ranker_adapter` | micro-batched ranking, hot swap, shadow |
| `rerank`, `cache` (+ `xfetch`, issue 8), `explanations` (issue 9) | the answer's shape |
| `ports`, `redis_stores`, `feature_store`, `item_catalog`, `memory` | I/O behind interfaces |
| `impressions`, `metrics`, `errors`, `seed` | recs.served, Prometheus, exceptions, inputs |
"""
