"""Request size limits of the real app: a head over its limits is refused with the reason
before authentication or validation reads it; a body over its limit gets 413."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from streamrec.infra.settings import Settings
from streamrec.serving.app import create_app
from streamrec.serving.worker import ServingWorker
from tests.unit.serving.test_app_validation import URL, Recommender


def _client(auth: str) -> TestClient:
    settings = Settings().with_overrides(auth={"mode": auth})
    worker = ServingWorker(settings)
    worker.recommender = Recommender()  # type: ignore[assignment]
    return TestClient(create_app(settings, worker), raise_server_exceptions=False)


@pytest.fixture(params=["off", "on"])
def client(request) -> TestClient:
    return _client(request.param)


def test_headers_over_the_limit_get_431_with_the_reason(client):
    limit = Settings().serving.max_header_bytes
    r = client.get(URL, headers={"x-padding": "a" * limit})
    assert r.status_code == 431
    assert r.json() == {"detail": f"request headers over {limit} bytes", "retry": False}


def test_a_query_over_the_limit_gets_414_with_the_reason(client):
    limit = Settings().serving.max_query_bytes
    r = client.get(f"{URL}?k=5&pad={'a' * limit}")
    assert r.status_code == 414
    assert r.json()["detail"] == f"query string over {limit} bytes"


def test_heads_within_the_limits_reach_the_app(client):
    r = client.get(f"{URL}?k=5", headers={"x-padding": "a" * 1000})
    assert r.status_code in (200, 401)  # 401: authentication on, no key given


def test_a_body_over_the_limit_gets_413_on_get_and_post():
    client, limit = _client("off"), Settings().serving.max_body_bytes
    for method in ("GET", "POST"):
        r = client.request(method, URL, content=b" " * (limit + 1))
        assert r.status_code == 413, (method, r.status_code)
