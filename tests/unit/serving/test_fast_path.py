"""Which requests the fast path takes (the rest goes to FastAPI, which owns the errors)."""

import pytest

from streamrec.serving.fast_path import _parse


def scope(path: str, query: bytes = b"", headers: list | None = None) -> dict:
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": query,
        "headers": headers or [],
    }


def test_a_plain_request_is_taken_with_its_parameters_and_request_id():
    got = _parse(
        scope(
            "/v1/users/u-1.a@b:c/recommendations",
            b"k=5&priority=prefetch&budget_ms=80",
            [(b"host", b"x"), (b"x-request-id", b"r-1")],
        )
    )
    assert got == ("u-1.a@b:c", {"k": "5", "priority": "prefetch", "budget_ms": "80"}, "r-1")
    assert _parse(scope("/v1/users/7/recommendations")) == ("7", {}, None)


@pytest.mark.parametrize(
    ("path", "query", "headers"),
    [
        ("/v1/users/7/recommendations/", b"", []),  # another path
        ("/v1/users/bad id/recommendations", b"", []),  # outside the id pattern
        ("/v1/users/" + "u" * 129 + "/recommendations", b"", []),  # too long
        ("/v1/users/7/recommendations", b"k=5&k=6", []),  # repeated
        ("/v1/users/7/recommendations", b"utm=x", []),  # not declared
        ("/v1/users/7/recommendations", b"k", []),  # malformed
        ("/v1/users/7/recommendations", b"", [(b"x-request-id", b"r" * 129)]),
        ("/v1/users/7/recommendations", b"", [(b"x-request-id", b"a"), (b"x-request-id", b"b")]),
    ],
)
def test_anything_else_is_left_to_fastapi(path, query, headers):
    assert _parse(scope(path, query, headers)) is None


@pytest.mark.parametrize(
    "headers",
    [
        [(b"content-length", b"10485760")],
        [(b"content-length", b"1")],
        [(b"transfer-encoding", b"chunked")],
    ],
)
def test_a_get_with_a_body_is_left_to_fastapi_and_its_body_limit(headers):
    assert _parse(scope("/v1/users/7/recommendations", b"", headers)) is None


def test_a_get_with_an_empty_body_is_taken():
    assert _parse(scope("/v1/users/7/recommendations", b"", [(b"content-length", b"0")])) == (
        "7",
        {},
        None,
    )
