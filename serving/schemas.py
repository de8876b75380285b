"""The serving worker's request and answer models at its HTTP boundary.

Responsibilities: validate what a client sends (`SessionContext` for the POST form, the
query parameters' bounds, the shared `RecQuery` both channels turn into), and shape what an
HTTP client gets back (`Recommendations`: the items with titles, the level, the model).
The request topic's own contracts are `topics.RecRequest` / `topics.RecResponse`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from streamrec.topics.base import USER_ID_MAX_LENGTH as USER_ID_MAX_LENGTH
from streamrec.topics.base import USER_ID_PATTERN as USER_ID_PATTERN
from streamrec.topics.base import UserId
from streamrec.topics.recs_requests import Priority
from streamrec.topics.recs_responses import Level

# The user-id rule is the request topic's (topics.base): the HTTP route's path (serving.app,
# fast_path) and `RecQuery` apply the same one, so both ways in accept the same ids.
REQUEST_ID_MAX_LENGTH = 128  # the X-Request-ID header


class RecQuery(BaseModel):
    """One request, whichever channel it came by."""

    model_config = ConfigDict(frozen=True)

    request_id: str
    user_id: UserId
    k: int = Field(20, ge=1, le=200)
    priority: Priority = "interactive"
    recent_item_ids: tuple[str, ...] = ()
    budget_ms: int = Field(150, ge=5, le=10_000)
    channel: Literal["http", "kafka"] = "http"
    principal: str = ""  # who asked (the impression's audit trail); "" with auth off


class SessionContext(BaseModel):
    """The POST form's body: what the user is doing right now."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(20, ge=1, le=200)
    recent_item_ids: list[str] = Field(default_factory=list, max_length=50)
    priority: Priority = "interactive"
    budget_ms: int | None = Field(None, ge=5, le=10_000)


class Item(BaseModel):
    item_id: str
    score: float
    title: str = ""
    genres: list[str] = Field(default_factory=list)
    explanation: str | None = None
    explored: bool = Field(False, description="a least-shown live item, not ranked (ADR 0126)")


class Recommendations(BaseModel):
    request_id: str
    user_id: str
    level: Level
    model_version: str | None
    latency_ms: float
    items: list[Item]


class Problem(BaseModel):
    """The body of every error answer."""

    detail: str | list[dict[str, object]]
    retry: bool = Field(True, description="false: overloaded, do not retry")
