"""schemathesis against the real serving app on the real stack, on every endpoint of its
OpenAPI schema: generated valid and invalid requests (paths, queries, headers, bodies) must
get no server error and only answers the schema declares (status, content type, headers,
body).

How many examples each endpoint got and how many failed is printed at the end of the module
(`pytest -s`); BENCHMARKS.md records a run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

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
from tests.integration.serving.conftest import serve

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


@pytest.fixture(scope="module")
def server(serving_stack: Settings) -> Iterator[object]:
    # Authentication and its rate limits off: this test is about what the routes accept and
    # answer. With them on, `api_headers` is the one place that would add a key.
    settings = serving_stack.with_overrides(auth={"mode": "off"})
    with serve(settings, cache_ttl_s=0.0, model_poll_s=3600.0) as server:
        yield server
    for name in sorted(TRIED):
        print(f"schemathesis {name}: {TRIED[name]} examples, {FAILED[name]} failures")


@pytest.fixture(scope="module")
def api_headers() -> dict[str, str]:
    """Headers every generated request carries (an API key when authentication is on)."""
    return {}


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
