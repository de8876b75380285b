"""Dedupe keys of enrichment work (no imports beyond the standard library: serving reads them).

The Redis key of a result is `topics.stores.LLM_RESULT.key(key=<dedupe key>)`.
"""

from __future__ import annotations


def description_key(item_id: str) -> str:
    return f"item_description:{item_id}"


def classification_key(item_id: str) -> str:
    return f"item_classification:{item_id}"


EXPLANATION_PREFIX = "explanation:"  # then "{user}:{item}" (serving builds many at once)


def explanation_key(user_id: str, item_id: str) -> str:
    return f"{EXPLANATION_PREFIX}{user_id}:{item_id}"
