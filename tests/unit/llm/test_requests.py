"""Enrichment requests from catalog items, prompts, parsing, and the local provider's
deterministic answers (pure functions)."""

from __future__ import annotations

from streamrec.llm.keys import classification_key, description_key, explanation_key
from streamrec.llm.local_provider import ChatRequest, answer_for, max_in_window
from streamrec.llm.requests import (
    explanation_request,
    parse_genres,
    prompt_for,
    requests_for_item,
    result_for,
)
from streamrec.topics import CatalogItem


def test_an_item_without_description_or_genres_asks_for_both() -> None:
    bare = CatalogItem(item_id="7", title="Heat", year=1995, genres=["unknown"], popularity_hint=3)
    kinds = {r.kind: r for r in requests_for_item(bare, ttl_s=60)}
    assert set(kinds) == {"item_description", "item_classification"}
    assert kinds["item_description"].key == description_key("7")
    assert kinds["item_classification"].key == classification_key("7")
    assert kinds["item_description"].priority == 3
    assert kinds["item_description"].expires_at is not None
    full = CatalogItem(item_id="8", title="X", genres=["Drama"], description="known")
    assert requests_for_item(full, 60) == []
    assert requests_for_item(CatalogItem(item_id="9", op="remove"), 60) == []


def test_prompts_carry_the_context() -> None:
    r = explanation_request("u1", "i1", title="Heat", because="Ronin", genres=["Crime"])
    assert r.key == explanation_key("u1", "i1")
    user = prompt_for(r)[-1].content
    assert "Heat" in user and "Ronin" in user and "Crime" in user


def test_genres_are_parsed_into_our_vocabulary() -> None:
    assert parse_genres("Drama, comedy; Space Opera\nSci-Fi, Drama.") == [
        "Drama",
        "Comedy",
        "Sci-Fi",
    ]


def test_classification_results_carry_labels() -> None:
    bare = CatalogItem(item_id="7", title="Heat")
    cls = next(r for r in requests_for_item(bare, 60) if r.kind == "item_classification")
    result = result_for(cls, "Crime,  Thriller", "m")
    assert result.labels == ["Crime", "Thriller"] and result.text == "Crime, Thriller"


def test_the_local_provider_answers_deterministically() -> None:
    bare = CatalogItem(item_id="7", title="Heat")
    for req in requests_for_item(bare, 60):
        body = ChatRequest(model="m", messages=[m.model_dump() for m in prompt_for(req)])
        assert answer_for(body.messages) == answer_for(body.messages)
        if req.kind == "item_classification":
            assert parse_genres(answer_for(body.messages))


def test_max_in_window() -> None:
    assert max_in_window([0.0, 0.5, 0.99, 1.0, 1.5, 3.0], 1.0) == 3
    assert max_in_window([], 1.0) == 0
