"""The dashboard's colouring rules, from observations to statuses."""

from __future__ import annotations

from collections import deque

from streamrec.analytics.dashboard.collector import histogram_p95, parse, prune
from streamrec.analytics.dashboard.health import Observation, WorkerObs, assess
from streamrec.analytics.dashboard.topology import BY_ID, EDGES, NODES
from streamrec.infra.settings import AnalyticsSettings

CFG = AnalyticsSettings(lag_warn=100, lag_alert=1000, latency_warn_s=0.5, error_warn_ratio=0.1)
STORES = {"kafka": ("ok", ""), "redis": ("ok", ""), "clickhouse": ("ok", ""), "index": ("ok", "")}


def _assess(workers: dict[str, WorkerObs], lags=None, kafka_ok=True):
    obs = Observation(workers=workers, lags=lags or {}, kafka_ok=kafka_ok, stores=STORES)
    nodes, edges = assess(obs, CFG)
    return {n.id: n for n in nodes}, {(e.source, e.target): e for e in edges}


def test_topology_is_connected_and_complete():
    assert all(e.source in BY_ID and e.target in BY_ID for e in EDGES)
    kinds = {n.kind for n in NODES}
    assert kinds == {"topic", "worker", "store"}
    linked = {e.source for e in EDGES} | {e.target for e in EDGES}
    assert {n.id for n in NODES} == linked | {"store:kafka"}  # the broker hosts every topic
    assert "worker:serving" in BY_ID and "worker:analytics-sink" in BY_ID


def test_live_worker_is_green_and_stopped_one_red():
    nodes, edges = _assess(
        {
            "trending": WorkerObs(name="trending", live=True, events_per_s=100),
            "session-features": WorkerObs(name="session-features", live=False, ever_ran=True),
        }
    )
    assert nodes["worker:trending"].status == "ok"
    assert nodes["worker:session-features"].status == "down"
    assert nodes["worker:session-features"].detail == "heartbeat missing"
    assert edges[("topic:events.interactions", "worker:session-features")].status == "down"
    assert edges[("worker:session-features", "store:redis")].status == "down"
    assert nodes["worker:candidates"].status == "idle"  # never ran: grey, not red


def test_breaker_errors_latency_and_lag():
    nodes, edges = _assess(
        {
            "llm-enricher": WorkerObs(name="llm-enricher", live=True, breakers_open=["llm"]),
            "trending": WorkerObs(name="trending", live=True, events_per_s=80, failed_per_s=20),
            "content-pipeline": WorkerObs(name="content-pipeline", live=True, p95_s=0.9),
            "analytics-sink": WorkerObs(name="analytics-sink", live=True),
            "interaction-counter": WorkerObs(name="interaction-counter", live=True),
        },
        lags={
            "streamrec-analytics-sink": {"events.interactions": 5000, "recs.served": 3},
            "streamrec-interaction-counter": {"events.interactions": 500},
        },
    )
    assert nodes["worker:llm-enricher"].status == "down"
    assert "breaker open: llm" in nodes["worker:llm-enricher"].detail
    assert nodes["worker:trending"].status == "warn"
    assert nodes["worker:content-pipeline"].status == "warn"
    assert edges[("topic:events.interactions", "worker:analytics-sink")].status == "down"
    assert edges[("topic:recs.served", "worker:analytics-sink")].status == "ok"
    assert edges[("topic:events.interactions", "worker:interaction-counter")].status == "warn"
    assert nodes["worker:analytics-sink"].status == "warn"


def test_broker_down_turns_topics_red():
    nodes, _ = _assess({}, kafka_ok=False)
    assert all(n.status == "down" for i, n in nodes.items() if i.startswith("topic:"))


def test_p95_from_histogram_bucket_deltas():
    def text(counts: list[int]) -> str:
        les = ["0.01", "0.1", "1.0", "+Inf"]
        lines = [f'h_bucket{{le="{le}"}} {c}' for le, c in zip(les, counts, strict=True)]
        return "# TYPE h histogram\n" + "\n".join(lines) + f"\nh_count {counts[-1]}\nh_sum 1\n"

    before = parse(text([10, 10, 10, 10]))
    now = parse(text([10, 90, 110, 110]))  # 100 new: 80 under 0.1 s, 20 under 1 s
    assert histogram_p95(now, before, "h") == 1.0
    assert histogram_p95(before, before, "h") is None


def test_serving_latency_against_the_request_budget_and_degradation():
    slow = WorkerObs(name="serving", live=True, p95_s=0.3, p95_kind="request")
    nodes, _ = _assess({"serving": slow})
    assert nodes["worker:serving"].status == "warn"  # 300 ms > request_latency_warn_s
    fine = WorkerObs(
        name="serving",
        live=True,
        p95_s=0.05,
        p95_kind="request",
        levels_per_s={"FULL": 90.0, "POPULAR": 10.0},
        cache_hit_ratio=0.8,
    )
    nodes, _ = _assess({"serving": fine})
    assert nodes["worker:serving"].status == "ok"
    assert "hit 80%" in nodes["worker:serving"].detail
    degraded = fine.model_copy(update={"levels_per_s": {"FULL": 10.0, "POPULAR": 90.0}})
    nodes, _ = _assess({"serving": degraded})
    assert nodes["worker:serving"].status == "warn"


def test_clean_stop_is_stopped_and_a_lost_heartbeat_is_down():
    nodes, edges = _assess(
        {
            "trending": WorkerObs(name="trending", live=False, ever_ran=True, stopped_at=3600.0),
            "session-features": WorkerObs(name="session-features", live=False, ever_ran=True),
        }
    )
    assert nodes["worker:trending"].status == "stopped"
    assert nodes["worker:trending"].detail == "stopped cleanly 01:00:00 UTC"
    assert edges[("topic:events.interactions", "worker:trending")].status == "stopped"
    assert nodes["worker:session-features"].status == "down"  # no stop record: it died


def test_prune_drops_old_points_then_empty_lines_and_plots():
    series = {
        "events per second": {
            "trending": deque([(10.0, 1.0), (50.0, 2.0)]),
            "gone": deque([(5.0, 1.0)]),
        },
        "p95 latency (ms)": {"gone": deque([(1.0, 3.0)])},
    }
    prune(series, since=20.0)
    assert series == {"events per second": {"trending": deque([(50.0, 2.0)])}}
    prune(series, since=60.0)
    assert series == {}  # the page then says "no data in the last 10 minutes"


def test_a_stuck_worker_is_red_with_its_reason_and_redeliveries_are_not_errors():
    nodes, _edges = _assess(
        {
            "analytics-sink": WorkerObs(
                name="analytics-sink", live=True, stuck="inserts failing for 31 s"
            ),
            "session-features": WorkerObs(
                name="session-features", live=True, events_per_s=100, redelivered_per_s=40
            ),
        }
    )
    assert nodes["worker:analytics-sink"].status == "down"
    assert nodes["worker:analytics-sink"].detail == "stuck: inserts failing for 31 s"
    session = nodes["worker:session-features"]
    assert session.status == "ok" and "redelivered 40/s" in session.detail


def test_serving_is_amber_when_a_ranker_feature_drifted():
    workers = {"serving": WorkerObs(name="serving", live=True, events_per_s=50)}
    obs = Observation(
        workers=workers,
        lags={},
        kafka_ok=True,
        stores=STORES,
        skew_drift=["item_popularity"],
        skew_warn=["item_year"],
    )
    node = {n.id: n for n in assess(obs, CFG)[0]}["worker:serving"]
    assert node.status == "warn"
    assert "skew drift: item_popularity" in node.detail and "skew warn: item_year" in node.detail
    quiet = obs.model_copy(update={"skew_drift": [], "skew_warn": []})
    assert {n.id: n for n in assess(quiet, CFG)[0]}["worker:serving"].status == "ok"
    down = obs.model_copy(update={"workers": {}})  # not running: no flag over the grey
    assert {n.id: n for n in assess(down, CFG)[0]}["worker:serving"].status == "idle"
