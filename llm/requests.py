"""Enrichment requests: their dedupe keys, how to make them, their prompts and answers.

Pure functions shared by the enricher (prompts, parsing), the processors that ask for work
(the catalog agent here, the candidates processor for explanations) and serving (the cache
key of an explanation). One dedupe key per piece of work:

| kind | key | context it reads |
| --- | --- | --- |
| item_description | `item_description:{item_id}` | title, year, genres |
| item_classification | `item_classification:{item_id}` | title, year |
| explanation | `explanation:{user_id}:{item_id}` | title, genres, because (a watched title) |

The key functions live in `llm.keys`; the Redis key of a result is
`topics.stores.LLM_RESULT.key(key=<dedupe key>)`.
"""

from __future__ import annotations

from datetime import timedelta

from streamrec.llm.client import ChatMessage
from streamrec.llm.keys import classification_key, description_key, explanation_key
from streamrec.topics import CatalogItem, EnrichRequest, EnrichResult
from streamrec.topics.base import utcnow
from streamrec.topics.llm_enrichment import EnrichKind

GENRE_VOCABULARY = (
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip
_CANONICAL = {g.lower(): g for g in GENRE_VOCABULARY}


def _item_context(item: CatalogItem) -> dict[str, str]:
    ctx = {"title": item.title}
    if item.year is not None:
        ctx["year"] = str(item.year)
    if item.genres:
        ctx["genres"] = ", ".join(item.genres)
    return ctx


def requests_for_item(item: CatalogItem, ttl_s: int) -> list[EnrichRequest]:
    """What an arriving item needs: a description if it has none, genres if it has none."""
    if item.op != "upsert" or not item.title:
        return []
    expires = utcnow() + timedelta(seconds=ttl_s)
    common = {
        "item_id": item.item_id,
        "context": _item_context(item),
        "priority": item.popularity_hint,
        "expires_at": expires,
    }
    out = []
    if not item.description:
        out.append(
            EnrichRequest(key=description_key(item.item_id), kind="item_description", **common)
        )
    genres = [g for g in item.genres if g.lower() != "unknown"]
    if not genres:
        out.append(
            EnrichRequest(
                key=classification_key(item.item_id), kind="item_classification", **common
            )
        )
    return out


def explanation_request(
    user_id: str,
    item_id: str,
    *,
    title: str,
    because: str,
    genres: list[str] | None = None,
    priority: float = 0.0,
    ttl_s: int = 3600,
) -> EnrichRequest:
    """An explanation of `item_id` for `user_id` ("because you watched `because`").

    For the candidates processor: request it for an active user's top items; serving reads
    the result by `explanation_key(user_id, item_id)` and uses a template until it exists.
    """
    context = {"title": title, "because": because}
    if genres:
        context["genres"] = ", ".join(genres)
    return EnrichRequest(
        key=explanation_key(user_id, item_id),
        kind="explanation",
        item_id=item_id,
        user_id=user_id,
        context=context,
        priority=priority,
        expires_at=utcnow() + timedelta(seconds=ttl_s),
    )


_SYSTEM: dict[EnrichKind, str] = {
    "item_description": (
        "You write catalogue copy for a video streaming service: a spoiler-free description "
        "of the film in at most two sentences."
    ),
    "item_classification": (
        "You classify films. Answer only with comma-separated genres chosen from: "
        + ", ".join(GENRE_VOCABULARY)
        + "."
    ),
    "explanation": (
        "You explain a recommendation to a viewer in one friendly sentence of at most 15 "
        "words, mentioning the film they watched."
    ),
}


def prompt_for(request: EnrichRequest) -> list[ChatMessage]:
    ctx = request.context
    title = ctx.get("title") or f"item {request.item_id}"
    lines = [f"{title} ({ctx['year']})" if ctx.get("year") else title]
    if request.kind == "explanation":
        lines.append(f"They watched: {ctx.get('because', 'something similar')}")
    if ctx.get("genres") and request.kind != "item_classification":
        lines.append(f"Genres: {ctx['genres']}")
    return [
        ChatMessage(role="system", content=_SYSTEM[request.kind]),
        ChatMessage(role="user", content="\n".join(lines)),
    ]


def parse_genres(text: str) -> list[str]:
    """Genres of our vocabulary named in an answer, in its order, without duplicates."""
    out: list[str] = []
    for part in text.replace("\n", ",").replace(";", ",").split(","):
        genre = _CANONICAL.get(part.strip().strip(".").lower())
        if genre and genre not in out:
            out.append(genre)
    return out


def result_for(request: EnrichRequest, text: str, model: str) -> EnrichResult:
    text = " ".join(text.split())[:2000]
    labels = parse_genres(text) if request.kind == "item_classification" else []
    return EnrichResult(
        key=request.key,
        kind=request.kind,
        item_id=request.item_id,
        user_id=request.user_id,
        text=text,
        labels=labels,
        model=model,
    )
