"""schemathesis against the real serving app on the real stack, on every endpoint of its
OpenAPI schema: generated valid and invalid requests (paths, queries, headers, bodies) must
get no server error and only answers the schema declares (status, content type, headers,
body). It runs twice: with authentication off (the demo's app) and on (the default outside
the demo), every request then carrying a service key read from auth.keys, /metrics guarded.

How many examples each endpoint got and how many failed is printed at the end of the module
(`pytest -s`); BENCHMARKS.md records a run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from streamrec.infra.settings import Settings
from streamrec.serving.auth import key_hash, new_key
from streamrec.serving.key_store import publish
from streamrec.topics import ApiKeyRecord
from tests.integration.serving.conftest import serve
from tests.kafka_helpers import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
MAX_EXAMPLES = 150
TRIED: Counter[str] = Counter()
FAILED: Counter[str] = Counter()


@pytest.fixture(scope="module", params=["auth off", "auth on"])
def secured(request: pytest.FixtureRequest, serving_stack: Settings) -> Iterator[tuple]:
    """(settings, headers every generated request carries): with auth on, a service key
    published on auth.keys, limits high enough that generated traffic is not rate limited
    (429 is declared, but it would hide what the routes answer), /metrics guarded."""
    if request.param == "auth off":
        yield serving_stack.with_overrides(auth={"mode": "off"}), {}, request.param
        return
    settings = serving_stack.with_overrides(
        auth={
            "mode": "on",
            "metrics_open": False,
            "key_rate_per_s": 1e6,
            "key_burst": 1e6,
            "user_rate_per_s": 0,
        }
    )
    key_id, key = new_key()
    publish(settings, ApiKeyRecord(key_id=key_id, key_hash=key_hash(key), scope="service"))
    yield settings, {"Authorization": f"Bearer {key}"}, request.param


@pytest.fixture(scope="module")
def server(secured: tuple) -> Iterator[object]:
    settings, headers, label = secured
    with serve(settings, cache_ttl_s=0.0, model_poll_s=3600.0) as server:
        if headers:  # the key reaches the server's follower of auth.keys
            wait_for(
                lambda: httpx.get(f"{server.url}/metrics", headers=headers).status_code == 200,
                timeout_s=60,
                what="the published key accepted",
            )
        yield server
    for name in sorted(TRIED):
        print(f"schemathesis [{label}] {name}: {TRIED[name]} examples, {FAILED[name]} failures")
    TRIED.clear()
    FAILED.clear()


@pytest.fixture(scope="module")
def api_headers(secured: tuple) -> dict[str, str]:
    """Headers every generated request carries (an API key when authentication is on)."""
    return secured[1]


def _fuzz(operation, mode: GenerationMode, headers: dict[str, str]) -> None:
    """`MAX_EXAMPLES` generated cases of one operation, each called and checked."""
    name = f"{operation.method.upper()} {operation.path} ({mode.value})"

    @given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis_settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def run(case) -> None:
        TRIED[name] += 1
        try:
            case.call_and_validate(headers=headers, checks=CHECKS, timeout=30)
        except Exception:
            FAILED[name] += 1
            raise

    run()


# schemathesis's pytest plugin (`from_fixture`) does not run under pytest 9: the operations
# are driven here, one hypothesis run per operation and generation mode.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_endpoint_answers_only_what_its_schema_declares(server, api_headers, mode):
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{o.method.upper()} {o.path}" for o in operations} >= {
        "GET /v1/users/{user_id}/recommendations",
        "POST /v1/users/{user_id}/recommendations",
        "GET /healthz",
        "GET /readyz",
    }
    errors = {}
    for operation in operations:
        try:
            _fuzz(operation, mode, api_headers)
        except Unsatisfiable:
            # No parameters and no body (/healthz, /readyz, /metrics): nothing can be invalid.
            assert mode is GenerationMode.NEGATIVE, operation.path
        except Exception as exc:  # every operation runs; all failures are reported together
            errors[f"{operation.method.upper()} {operation.path}"] = str(exc)[:2000]
    assert not errors, errors
