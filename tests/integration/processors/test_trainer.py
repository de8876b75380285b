"""The trainer worker on the real stack, in compressed time: it retrains on new interactions
(the N-interaction trigger, across a restart and while following the log), a deliberately
worse candidate (trained on shuffled item ids) is stopped by the gate with its verdict in the
manifest and on registry.changes, and a normal candidate passes and is promoted.

The log is ML-100K's first 300 users with each user's events spread evenly over the same
8 hours (k-th of n events at k/n), so every time cut leaves each user history before it and
fresh interactions after it, as a service whose users keep coming back. Training is one
epoch of each model on ~15-25k events with a 16-wide two-tower (a few seconds).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
import redis
from typer.testing import CliRunner

from streamrec.cli import app
from streamrec.models.dataset import load_catalog, load_events
from streamrec.models.registry import ModelRegistry
from streamrec.processors.trainer import NAME, status_key
from streamrec.streams import codecs
from streamrec.streams.catalog import publish_items
from streamrec.streams.metrics import stopped_workers
from streamrec.streams.producer import DeliveryTracker, bulk_producer, flush, produce_event
from streamrec.streams.worker_process import WorkerProcess
from streamrec.topics import EVENTS_INTERACTIONS, REGISTRY_CHANGES, Interaction, RegistryChange
from tests.kafka_helpers import end_offsets, read_range, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

USERS = 300
SPAN_S = 8 * 3600
N_TRIGGER = 2000


def compressed_log(settings) -> pd.DataFrame:
    events = load_events(settings)
    ev = events[events.user_id.astype(int) <= USERS].sort_values(["user_id", "ts", "seq"])
    k = ev.groupby("user_id").cumcount().to_numpy()
    n = ev.groupby("user_id")["item_id"].transform("size").to_numpy()
    jitter = np.random.default_rng(0).random(len(k))
    ev = ev.assign(ts=(1_790_000_000 + (k + jitter) / n * SPAN_S).astype(int))
    return ev.sort_values(["ts", "seq"], kind="stable").reset_index(drop=True)


def produce(settings, frame: pd.DataFrame) -> None:
    producer, tracker = bulk_producer(settings), DeliveryTracker()
    for r in frame.itertuples():
        event = Interaction(
            event_id=f"trainer-{r.seq}",
            user_id=str(r.user_id),
            item_id=str(r.item_id),
            kind="rating",
            rating=None if np.isnan(r.rating) else float(r.rating),
            ts=datetime.fromtimestamp(int(r.ts), UTC),
        )
        produce_event(producer, EVENTS_INTERACTIONS, event, tracker)
    flush(producer)
    tracker.raise_if_failed()


def status(store: redis.Redis, group: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in store.hgetall(status_key(group)).items()}


def trained(worker: WorkerProcess, store: redis.Redis, group: str, version_not: str | None = None):
    def check() -> dict[str, str] | None:
        assert worker.alive(), worker.log.read_text()[-3000:]
        s = status(store, group)
        done = int(s.get("trainings", 0)) >= 1 and s.get("last_version") != version_not
        return s if done else None

    return check


@pytest.fixture
def settings(isolated_stack, ml100k):
    return isolated_stack.with_overrides(
        models={"dim": 16, "ranker_depth": 100},
        trainer={
            "min_new_interactions": N_TRIGGER,
            "interval_s": 1e9,  # the schedule never fires here: only new interactions do
            "min_gap_s": 0,
            "retriever_epochs": 1,
            "ranker_epochs": 1,
            "split_evaluation": False,
            "gate_margin": 0.02,
            "gate_samples": 500,
            "nice": 7,
            "cpus": [0],
            "poll_s": 0.2,
        },
    )


def test_trainer_retrains_gates_and_promotes(settings, unique):
    group = f"trainer-{unique}"
    store = redis.Redis.from_url(settings.redis_url)
    registry = ModelRegistry(settings)
    log = compressed_log(settings)
    t1, t2 = np.quantile(log.ts, [0.5, 0.75])
    first, second, third = log[log.ts < t1], log[(log.ts >= t1) & (log.ts < t2)], log[log.ts >= t2]
    assert len(second) >= N_TRIGGER and len(third) >= N_TRIGGER
    publish_items(settings, load_catalog(settings))
    produce(settings, first)
    changes_from = end_offsets(settings, REGISTRY_CHANGES.name)

    # 1. No version yet: the first candidate is trained as soon as the log is read, and
    # promoted (there is nothing to compare it with). The worker is niced and pinned.
    with WorkerProcess(settings, NAME, group=group) as worker:
        s1 = wait_for(trained(worker, store, group), 120, "the first candidate")
        assert os.getpriority(os.PRIO_PROCESS, worker.proc.pid) == 7
        assert os.sched_getaffinity(worker.proc.pid) == {0}
    assert any(w.name == NAME for w in stopped_workers(settings))  # a clean stop
    a = s1["last_version"]
    assert s1["last_trigger"] == "first" and s1["last_stage"] == "promoted"
    assert registry.promoted("ranker").version == a == registry.promoted("retriever").version

    # 2. New interactions while it was stopped: the restarted worker counts them from the
    # manifest's log offsets and retrains; this candidate learns on shuffled item ids.
    produce(settings, second)
    shuffled = {"STREAMREC_TRAINER__DEBUG_SHUFFLE_ITEMS": "true"}
    with WorkerProcess(settings, NAME, group=group, extra_env=shuffled) as worker:
        s2 = wait_for(trained(worker, store, group, a), 120, "the shuffled candidate")
    b = s2["last_version"]
    assert s2["last_trigger"] == "interactions" and s2["last_stage"] == "gate-failed"
    assert s2["last_passed"] == "0"
    assert registry.promoted("ranker").version == a  # stopped by the gate
    gate_b = registry.get("ranker", b).manifest.model_extra["gate"]
    assert gate_b["passed"] is False and gate_b["against"] == a
    worse = gate_b["verdict"]["metrics"]["ndcg_20"]
    assert worse["ci_high"] < -0.02 and not worse["passed"], worse

    # 3. A normal worker reads the log (nothing new since the last candidate: no training)
    # and follows it; the third part arrives while it runs. Its trigger is the whole part,
    # so that it trains once, on all of it.
    store.delete(status_key(group))
    whole = {"STREAMREC_TRAINER__MIN_NEW_INTERACTIONS": str(len(third))}
    with WorkerProcess(settings, NAME, group=group, extra_env=whole) as worker:
        following = wait_for(
            lambda: (s := status(store, group)).get("state") == "following" and s,
            60,
            "the worker following the log",
        )
        assert following["events"] == str(len(first) + len(second))
        assert following["new_interactions"] == "0"
        produce(settings, third)
        s3 = wait_for(trained(worker, store, group, b), 120, "the normal candidate")
    c = s3["last_version"]
    assert s3["last_trigger"] == "interactions" and s3["last_stage"] == "promoted", s3
    assert registry.promoted("ranker").version == c
    manifest_c = registry.get("ranker", c).manifest.model_extra
    assert manifest_c["gate"]["passed"] is True and manifest_c["gate"]["against"] == a
    assert manifest_c["trained_before"] == manifest_c["gate"]["holdout_from"]
    assert (
        manifest_c["trained_before"]
        > registry.get("ranker", b).manifest.model_extra["trained_before"]
    )
    assert manifest_c["trainer"]["nice"] == 7 and manifest_c["trainer"]["cpus"] == [0]

    # The verdicts on registry.changes: every candidate published with its gate, the two
    # that passed promoted.
    got = [
        codecs.decode(REGISTRY_CHANGES, v)
        for _, v in read_range(
            settings,
            REGISTRY_CHANGES.name,
            changes_from,
            end_offsets(settings, REGISTRY_CHANGES.name),
        )
    ]
    ranker = [(ch.version, ch.action, ch.gate["passed"]) for ch in got if ch.kind == "ranker"]
    assert ranker == [
        (a, "publish", True),
        (a, "promote", True),
        (b, "publish", False),
        (c, "publish", True),
        (c, "promote", True),
    ]
    assert all(isinstance(ch, RegistryChange) for ch in got)

    # `streamrec models status` shows each version's stage and verdict.
    result = CliRunner().invoke(
        app, ["models", "status", "--kind", "ranker", "--json"], env=settings.to_env()
    )
    assert result.exit_code == 0, result.output
    rows = {r["version"]: r for r in map(json.loads, result.output.splitlines())}
    assert [(rows[v]["stage"], rows[v]["gate"]) for v in (a, b, c)] == [
        ("previously promoted", "passed"),
        ("gate-failed", "failed"),
        ("promoted", "passed"),
    ]
    assert rows[b]["figures"]["ndcg_20"].startswith(f"{worse['candidate']:.4f} / ")


def test_trainer_trains_on_the_feast_offline_store(settings, unique):
    """`trainer.features=feast`: the offline store is refreshed from the log, and the first
    candidate trains on its point-in-time features."""
    from streamrec.features.feast_store import offline_dir

    group = f"trainer-feast-{unique}"
    store = redis.Redis.from_url(settings.redis_url)
    # A state dir of its own (registry, offline store) on the module's stack, whose log
    # already holds the test above's events when that ran first: a first candidate either way.
    feast = settings.with_overrides(
        trainer={"features": "feast"}, stack={"state_dir": settings.state_dir / group}
    )
    log = compressed_log(feast)
    if not any(end_offsets(feast, EVENTS_INTERACTIONS.name).values()):
        publish_items(feast, load_catalog(feast))
        produce(feast, log[log.ts < np.quantile(log.ts, 0.5)])
    with WorkerProcess(feast, NAME, group=group) as worker:
        s = wait_for(trained(worker, store, group), 180, "a candidate on Feast features")
    manifest = ModelRegistry(feast).get("ranker", s["last_version"]).manifest.model_extra
    assert manifest["features"] == "feast" and manifest["gate"]["passed"] is True
    assert (offline_dir(feast) / "user_session.parquet").exists()
