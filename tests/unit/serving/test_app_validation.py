"""The app's answers to bad input: always a 4xx with the reason, never a 500 or a traceback.

The real ASGI app (`create_app`) with an in-memory recommender in place of the started worker's
(no stores needed to validate); tests/integration/serving/test_app.py runs the same checks
against the app on the real stack."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from streamrec.infra.settings import Settings
from streamrec.serving.app import create_app
from streamrec.serving.worker import ServingWorker

URL = "/v1/users/1/recommendations"


class Answer:
    def __init__(self, query: Any) -> None:
        self.query = query

    def http_json(self, titles: Any) -> bytes:
        return b'{"budget_ms": %d}' % self.query.budget_ms


class Recommender:
    admission = None

    def __init__(self) -> None:
        self.queries: list[Any] = []

    async def recommend(self, query: Any) -> Answer:
        self.queries.append(query)
        return Answer(query)


@pytest.fixture
def client() -> Iterator[TestClient]:
    settings = Settings().with_overrides(auth={"mode": "off"})  # validation, not credentials
    worker = ServingWorker(settings)
    worker.recommender = Recommender()  # type: ignore[assignment]
    # No lifespan (the stores are not needed): the routes and every middleware are the app's.
    yield TestClient(create_app(settings, worker), raise_server_exceptions=False)


BAD_BODIES = [
    b'{"k": NaN}',
    b'{"k": Infinity}',
    b'{"k": -Infinity}',
    b'{"surprise": NaN}',
    b'{"recent_item_ids": [NaN, Infinity]}',
    b'{"k": 1e400}',
    b'{"k": 123456789012345678901234567890}',
    b'{"k": ' + b"9" * 5000 + b"}",
    b'{"recent_item_ids": ' + b"[" * 900 + b"]" * 900 + b"}",
    b'{"recent_item_ids": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"surprise": ' + b'{"a": ' * 900 + b"NaN" + b"}" * 900 + b"}",
    b"[NaN]",
    b"NaN",
    b"{not json",
    b"\xff\xfe",
    b"",
]


@pytest.mark.parametrize("body", BAD_BODIES, ids=range(len(BAD_BODIES)))
def test_every_bad_body_is_a_4xx_with_the_reason_and_no_traceback(client, body, caplog):
    with caplog.at_level(logging.ERROR):
        r = client.post(URL, content=body, headers={"content-type": "application/json"})
    assert r.status_code in (400, 422), (r.status_code, r.text[:300])
    assert r.json()["detail"]
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]


def test_the_reason_names_the_field_and_says_what_was_sent(client):
    r = client.post(
        URL,
        content=b'{"k": NaN, "surprise": Infinity}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert {tuple(d["loc"]) for d in detail} == {("body", "k"), ("body", "surprise")}
    assert {d["input"] for d in detail} == {"NaN", "Infinity"}


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
@pytest.mark.parametrize("path", [URL, "/healthz", "/nowhere"])
def test_the_body_limit_holds_for_every_method_and_path(client, method, path):
    r = client.request(method, path, content=b"x" * 10_000_000)
    assert r.status_code == 413, (method, path, r.status_code)


def test_a_chunked_body_over_the_limit_is_refused_even_where_nothing_reads_it(client):
    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b"x" * 1000

    r = client.request("GET", URL, content=chunks())
    assert r.status_code == 413


def test_a_small_body_on_a_get_is_answered(client):
    assert client.request("GET", URL, content=b"{}").status_code == 200


@pytest.mark.parametrize("budget", ["0", "4", "10001"])
def test_a_budget_out_of_bounds_is_refused_the_same_way_on_get_and_post(client, budget):
    get = client.get(URL, params={"budget_ms": budget})
    post = client.post(URL, json={"budget_ms": int(budget)})
    assert get.status_code == post.status_code == 422
    assert get.json()["detail"][0]["loc"][-1] == post.json()["detail"][0]["loc"][-1] == "budget_ms"


def test_no_budget_is_the_default_on_get_and_post(client):
    default = Settings().serving.request_budget_ms
    assert client.get(URL).json() == {"budget_ms": default}
    assert client.post(URL, json={}).json() == {"budget_ms": default}
    assert client.get(URL, params={"budget_ms": "80"}).json() == {"budget_ms": 80}


@pytest.mark.parametrize("user", ["用户", "a b", "x" * 129, "a%2Fb"])
def test_user_ids_the_topic_refuses_are_refused_on_get_and_post(client, user):
    assert client.get(f"/v1/users/{user}/recommendations").status_code in (404, 422)
    assert client.post(f"/v1/users/{user}/recommendations", json={}).status_code in (404, 422)
