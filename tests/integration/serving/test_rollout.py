"""Shadow, canary and rollout on the real stack: a serving worker (HTTP), the analytics sink
(in this process, so the controller here can read the same embedded ClickHouse), Kafka and
Redis.

A shadow ranker's comparison shows on /metrics and in `streamrec models shadow-report`.

The live CTR is made by this test: after each answer it clicks the answer's first item, or
not, by the side the user is on (the same stable hash serving uses). A candidate whose users
click at least as often goes 5% -> 25% -> promoted (100%); a candidate whose users never
click, while the control's always do, is rolled back at 5% with the reason on
registry.changes and in `streamrec models status`. Every request of both runs answers 200.

The ranker versions are copies of one trained model under new names: which side is "better"
is the clicks', so the test is about the rollout, not about the model.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable

import httpx
import pytest
from typer.testing import CliRunner

from streamrec.analytics.experiments import canary_bucket, canary_limit
from streamrec.analytics.store import store_session
from streamrec.cli import app
from streamrec.infra.settings import Settings
from streamrec.models.registry import ModelRegistry
from streamrec.processors.analytics_sink import open_sink
from streamrec.processors.rollout import RolloutController, clickhouse_figures
from streamrec.processors.trainer import ProducerOutbox
from streamrec.streams import codecs
from streamrec.streams.producer import bulk_producer, flush, produce_event
from streamrec.topics import EVENTS_INTERACTIONS, REGISTRY_CHANGES, Interaction, RegistryChange
from streamrec.topics.base import utcnow
from tests.integration.serving.conftest import RANKER, USERS_WITH_FEATURES, serve
from tests.kafka_helpers import end_offsets, read_range, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(400)]

USERS = USERS_WITH_FEATURES
MIN_IMPRESSIONS = 40


def copy_ranker(settings: Settings, source_version: str, version: str) -> None:
    registry = ModelRegistry(settings)
    target = registry.kind_dir(RANKER) / version
    shutil.copytree(registry.kind_dir(RANKER) / source_version, target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["version"] = version
    (target / "manifest.json").write_text(json.dumps(manifest))


def candidate_name(prefix: str) -> str:
    """A version name whose 5% and 25% canaries hold a few of the test's users (the hash
    is per version, so the name decides who is in)."""
    for n in range(1000):
        name = f"{prefix}{n}"
        at5 = sum(canary_bucket(u, name) < canary_limit(0.05) for u in USERS)
        at25 = sum(canary_bucket(u, name) < canary_limit(0.25) for u in USERS)
        if 3 <= at5 <= 5 and 9 <= at25 <= 13:
            return name
    raise AssertionError("no version name with a usable canary")


@pytest.fixture(scope="module")
def settings(serving_stack: Settings) -> Settings:
    return serving_stack.with_overrides(
        analytics={"batch_max_wait_s": 0.2},
        # Tiny samples on a shared 2-core machine: a p99 of 40 answers is their slowest one,
        # so the latency margin is wide here; CTR is what these runs make worse.
        rollout={"min_impressions": MIN_IMPRESSIONS, "p99_margin_ms": 2000.0},
    )


@pytest.fixture(scope="module")
def sink(settings: Settings):
    sink = open_sink(settings, group="rollout-test-sink")
    thread = threading.Thread(target=sink.run, daemon=True)
    thread.start()
    yield sink
    sink.stop()
    thread.join(30)


@pytest.fixture(scope="module")
def server(settings: Settings, sink):
    with serve(settings, cache_ttl_s=0.0, model_poll_s=0.2) as server:
        yield server


def ranker_changes(settings: Settings, start: dict[int, int]) -> list[RegistryChange]:
    values = read_range(
        settings, REGISTRY_CHANGES.name, start, end_offsets(settings, REGISTRY_CHANGES.name)
    )
    changes = [codecs.decode_json(RegistryChange, v) for _, v in values if v is not None]
    return [c for c in changes if c.kind == RANKER]


def controller(settings: Settings) -> RolloutController:
    def figures(state, until):
        with store_session(settings) as client:
            return clickhouse_figures(settings, client)(state, until)

    return RolloutController(settings, ModelRegistry(settings), ProducerOutbox(settings), figures)


def drive(
    server, settings: Settings, clicks: Callable[[bool, int], bool], until: set[str]
) -> list[tuple[str, float]]:
    """Requests for every user, clicks as `clicks(is_canary, n)` says, and a controller step
    per round, until it takes one of the actions in `until`; returns (action, share) taken.
    Every request must answer 200."""
    registry = ModelRegistry(settings)
    ctl = controller(settings)
    producer = bulk_producer(settings)
    taken: list[tuple[str, float]] = []
    deadline = time.monotonic() + 240
    n = 0
    with httpx.Client(base_url=server.url, timeout=30) as client:
        while time.monotonic() < deadline:
            state = registry.canary(RANKER)
            for user in USERS:
                r = client.get(f"/v1/users/{user}/recommendations", params={"k": 5})
                assert r.status_code == 200, r.text  # no request fails at any step
                body = r.json()
                canary = state is not None and canary_bucket(user, state.version) < canary_limit(
                    state.share
                )
                n += 1
                if body["items"] and clicks(canary, n):
                    click = Interaction(
                        event_id=f"rollout-click-{n}-{time.monotonic_ns()}",
                        user_id=user,
                        item_id=body["items"][0]["item_id"],
                        kind="click",
                        ts=utcnow(),
                    )
                    produce_event(producer, EVENTS_INTERACTIONS, click)
            flush(producer)
            result = ctl.step()
            assert result is not None, "the canary ended without a decision"
            _, change = result
            if change is not None:
                taken.append((change.action, (change.rollout or {}).get("share")))
                if change.action in until:
                    return taken
    raise AssertionError(f"no {until} within the deadline; taken so far: {taken}")


def test_the_shadow_comparison_is_on_metrics_and_in_the_report(settings):
    control = ModelRegistry(settings).promoted(RANKER).version
    copy_ranker(settings, control, "shadow1")
    with serve(
        settings, shadow_version="shadow1", shadow_sample=1.0, shadow_report_s=0.2
    ) as shadowed:
        for user in USERS:
            r = httpx.get(f"{shadowed.url}/v1/users/{user}/recommendations", timeout=30)
            assert r.status_code == 200, r.text
            assert r.json()["model_version"] in (control, "retrieval")  # the shadow never answers
        metrics = httpx.get(f"{shadowed.url}/metrics", timeout=10).text
        assert 'serving_shadow_seconds_count{model="shadow"}' in metrics
        assert 'serving_shadow_score_count{model="served"}' in metrics

        def reported():
            result = CliRunner().invoke(
                app, ["models", "shadow-report", "--json"], env=settings.to_env()
            )
            assert result.exit_code == 0, result.output
            rows = [json.loads(line) for line in result.output.splitlines()]
            return rows if rows and rows[0]["requests"] >= len(USERS) // 2 else None

        (row,) = wait_for(reported, 30, "the shadow summary in Redis")
    # The same weights under another name: the two models agree on every request.
    assert (row["served_version"], row["shadow_version"]) == (control, "shadow1")
    assert row["agreement_mean"] == 1.0 and row["failures"] == 0
    assert row["served_scores"]["n"] == row["shadow_scores"]["n"] > 0
    assert row["served_scores"]["p50"] == pytest.approx(row["shadow_scores"]["p50"], abs=1e-4)
    assert row["shadow_ms"]["n"] == row["batches"] > 0 and row["shadow_ms"]["p99"] > 0


def test_a_better_candidate_goes_through_the_canary_to_everyone(server, settings):
    registry = ModelRegistry(settings)
    control = registry.promoted(RANKER).version
    good = candidate_name("good")
    copy_ranker(settings, control, good)
    changes_from = end_offsets(settings, REGISTRY_CHANGES.name)
    controller(settings).start(good)

    # The canary's users click every answer, the others every other one.
    taken = drive(server, settings, lambda canary, n: canary or n % 2 == 0, {"promote"})

    assert taken == [("canary", 0.25), ("promote", 1.0)]
    assert registry.promoted(RANKER).version == good and registry.canary(RANKER) is None
    models = server.worker.models
    wait_for(lambda: models.version == good and models.canary is None, 30, "the promotion")
    changes = ranker_changes(settings, changes_from)
    assert [(c.action, c.rollout["share"]) for c in changes] == [
        ("canary", 0.05),
        ("canary", 0.25),
        ("promote", 1.0),
    ]
    assert changes[-1].rollout["figures"]["canary"]["impressions"] >= MIN_IMPRESSIONS


def test_a_canary_made_worse_is_rolled_back_with_its_reason(server, settings):
    registry = ModelRegistry(settings)
    control = registry.promoted(RANKER).version
    bad = candidate_name("bad")
    copy_ranker(settings, control, bad)
    changes_from = end_offsets(settings, REGISTRY_CHANGES.name)
    controller(settings).start(bad)
    models = server.worker.models
    wait_for(lambda: models.canary is not None, 30, "the canary to load")
    assert models.canary.ranker.version == bad

    # The canary's users never click; the control's always do.
    taken = drive(server, settings, lambda canary, n: not canary, {"rollback", "promote"})

    assert taken == [("rollback", 0.05)]
    assert registry.promoted(RANKER).version == control and registry.canary(RANKER) is None
    wait_for(lambda: models.canary is None, 30, "the canary to end")
    assert models.version == control
    (rollback,) = [c for c in ranker_changes(settings, changes_from) if c.action == "rollback"]
    assert rollback.version == control and rollback.rollout["candidate"] == bad
    assert rollback.rollout["reason"].startswith("CTR 0.00%")

    result = CliRunner().invoke(
        app, ["models", "status", "--kind", "ranker", "--json"], env=settings.to_env()
    )
    assert result.exit_code == 0, result.output
    rows = {r["version"]: r for r in map(json.loads, result.output.splitlines())}
    assert rows[bad]["stage"] == "rolled back" and "CTR 0.00%" in rows[bad]["reason"]
    assert rows[control]["stage"] == "promoted"
