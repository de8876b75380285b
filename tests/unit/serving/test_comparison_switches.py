"""The switches the scenarios' naive mode turns (for comparison only): admission off sheds
nothing, and the inline LLM explainer makes the answer wait for the LLM."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from starlette.testclient import TestClient

from streamrec.infra.settings import LLMSettings, Settings
from streamrec.serving.app import create_app
from streamrec.serving.errors import Overloaded
from streamrec.serving.inline_llm import InlineLLMExplainer
from streamrec.serving.worker import ServingWorker
from tests.unit.serving.test_app_validation import Recommender
from tests.unit.serving.test_core import Harness, catalog


async def burst(admission: bool) -> tuple[int, int]:
    h = Harness(admission=admission, max_in_flight=1, queue_interactive=0, refresh_s=3600.0)

    async def slow_explain(user_id, items, recent, left_s):
        await asyncio.sleep(0.05)  # holds the one slot while the others arrive
        return items, set()

    h.core.explain = slow_explain
    await h.core.start()
    try:
        got = await asyncio.gather(
            *(h.ask(rid=f"r{i}", k=5 + i) for i in range(5)), return_exceptions=True
        )
    finally:
        await h.core.stop()
    shed = sum(isinstance(g, Overloaded) for g in got)
    return len(got) - shed, shed


async def test_admission_sheds_past_its_bound_and_switched_off_sheds_nothing():
    answered, shed = await burst(admission=True)
    assert shed > 0
    answered, shed = await burst(admission=False)
    assert (answered, shed) == (5, 0)


class Templates:
    async def explain_many(self, requests, lefts_s):
        return [["template"] * len(ids) for _, ids, _ in requests], set()


def provider(status: int, delay_s: float, calls: list[str]) -> httpx.MockTransport:
    async def handle(request: httpx.Request) -> httpx.Response:
        calls.append(json.loads(request.content)["messages"][-1]["content"])
        await asyncio.sleep(delay_s)
        if status != 200:
            return httpx.Response(status, json={"error": {"message": "no"}})
        body = {"model": "m", "choices": [{"message": {"role": "assistant", "content": "LLM!"}}]}
        return httpx.Response(200, json=body)

    return httpx.MockTransport(handle)


@pytest.mark.parametrize("status", [200, 500])
async def test_the_inline_explainer_waits_for_the_llm_on_the_top_item(status: int):
    calls: list[str] = []
    settings = LLMSettings(requests_per_minute=60_000, max_attempts=1, burst=10)
    inline = InlineLLMExplainer(Templates(), catalog(), settings, provider(status, 0.2, calls))
    loop = asyncio.get_running_loop()
    started = loop.time()
    texts, gone = await inline.explain_many([("u1", ["3", "4"], ["1"]), ("u2", ["5"], [])], [1, 1])
    waited = loop.time() - started
    await inline.aclose()
    assert waited >= 0.2  # the answer waited for the provider
    assert len(calls) == 2 and "Movie 3" in calls[0]
    top = "LLM!" if status == 200 else "template"
    assert texts == [[top, "template"], [top]]
    assert gone == set()
    assert (inline.calls, inline.failures) == (2, 0 if status == 200 else 2)


@pytest.mark.parametrize(("admission", "status"), [(True, 503), (False, 200)])
def test_the_front_door_refuses_a_lagging_loop_only_with_admission_on(admission, status):
    settings = Settings().with_overrides(serving={"admission": admission}, auth={"mode": "off"})
    worker = ServingWorker(settings)
    worker.recommender = Recommender()  # type: ignore[assignment]
    worker.lag.now = lambda: 1.0  # type: ignore[method-assign]  # a second behind
    client = TestClient(create_app(settings, worker), raise_server_exceptions=False)
    r = client.get("/v1/users/1/recommendations")
    assert r.status_code == status
    assert ("retry-after" in r.headers) is admission


@pytest.mark.parametrize("merged", [False, True])
async def test_fallback_switched_off_answers_a_failed_read_with_its_error(merged: bool):
    from streamrec.serving.errors import DependencyError

    h = Harness(merged=merged, fallback=False, refresh_s=3600.0)
    await h.core.start()
    try:
        ok = await h.ask()
        assert ok.level == "FULL"  # nothing failed: the switch changes nothing
        assert (await h.ask(user="nobody")).level == "POPULAR"  # none stored is no failure
        h.cands.fail = True
        with pytest.raises(DependencyError):
            await h.ask(rid="r2", k=7)
        h.cands.fail, h.features.fail = False, True
        with pytest.raises(DependencyError):
            await h.ask(rid="r3", k=8)
    finally:
        await h.core.stop()
