"""Exploration on the real stack: a treatment user's answers end with marked, least-shown
catalog items, which their impressions on recs.served list; a control user's do not."""

from __future__ import annotations

import httpx
import pytest

from streamrec.analytics.experiments import variant_for
from streamrec.infra.settings import Settings
from streamrec.streams import codecs
from streamrec.topics import RECS_SERVED, Impression
from tests.integration.serving.conftest import USERS_WITH_FEATURES, serve
from tests.kafka_helpers import end_offsets, read_range, wait_for

pytestmark = pytest.mark.integration

SLOTS = 3


@pytest.fixture(scope="module")
def server(serving_stack: Settings):
    with serve(serving_stack, cache_ttl_s=0.0, refresh_s=0.2, explore_slots=SLOTS) as server:
        yield server


def user_in(server, variant: str) -> str:
    return next(u for u in USERS_WITH_FEATURES if variant_for(server.settings, u) == variant)


def items(server, user: str, request_id: str) -> list[dict]:
    r = httpx.get(
        f"{server.url}/v1/users/{user}/recommendations",
        params={"k": 10},
        headers={"x-request-id": request_id},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return r.json()["items"]


def explored(answer: list[dict]) -> list[str]:
    return [i["item_id"] for i in answer if i.get("explored")]


def test_treatment_answers_explore_and_control_answers_do_not(server):
    treated, control = user_in(server, "treatment"), user_in(server, "control")

    def explored_answer() -> list[dict] | None:
        answer = items(server, treated, "x-0")
        return answer if explored(answer) else None

    # The rotation fills from the followed catalog in the background (every refresh_s).
    first = wait_for(explored_answer, 20, "an explored answer", interval=0.2)
    before = end_offsets(server.settings, RECS_SERVED.name)
    answers = {f"x-{n}": items(server, treated, f"x-{n}") for n in range(1, 5)}
    plain = items(server, control, "c-1")

    marks = [bool(i.get("explored")) for i in first]
    assert marks == [False] * (10 - SLOTS) + [True] * SLOTS
    shown = [i for a in answers.values() for i in explored(a)]
    assert len(shown) == 4 * SLOTS and len(set(shown)) == len(shown)  # a rotation, no repeats
    for answer in answers.values():
        ranked = {i["item_id"] for i in answer if not i.get("explored")}
        assert ranked.isdisjoint(explored(answer))
    assert explored(plain) == [] and len(plain) == 10

    def published() -> dict[str, Impression] | None:
        after = end_offsets(server.settings, RECS_SERVED.name)
        got = {}
        for _, value in read_range(server.settings, RECS_SERVED.name, before, after):
            imp = codecs.decode_json(Impression, value)
            got[imp.request_id] = imp
        wanted = [*answers, "c-1"]
        return got if all(r in got for r in wanted) else None

    got = wait_for(published, 20, "impressions on recs.served", interval=0.3)
    for request_id, answer in answers.items():
        assert got[request_id].explored_item_ids == explored(answer)
        assert got[request_id].variant == "treatment"
    assert got["c-1"].explored_item_ids == [] and got["c-1"].variant == "control"
    metrics = httpx.get(f"{server.url}/metrics").text
    assert "serving_explored_items_total" in metrics
