"""LLM access for StreamRec, always off the request path.

- `llm.client.LLMClient`: the async client for an OpenAI-compatible chat/completions API
  (token bucket, timeouts, Retry-After, retries inside a budget, a circuit breaker);
- `llm.requests`: dedupe keys and prompts of the enrichment kinds (pure, shared by the
  enricher, the candidates processor that requests explanations, and serving);
- `llm.local_provider`: a deterministic OpenAI-compatible server for tests and the demo.
"""
