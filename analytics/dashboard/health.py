"""The dashboard's health rules: observations in, a colour (status) per node and edge out.

Pure functions (no I/O) so the rules are tested without a stack. Statuses:
`ok` (green), `warn` (amber), `down` (red), `idle` (grey: never started here), `stopped`
(grey: it stopped cleanly, leaving a stop record a crash cannot write).

- worker: `stopped` when it is not live and its last record is a clean stop; `down` when its
  heartbeat is missing but it ran (registered while the dashboard
  watched, or its consumer group has committed offsets), or a breaker is open; `warn` when its
  failed/handled ratio, p95 latency (requests: `request_latency_warn_s`, batches:
  `latency_warn_s`) or input lag is over the threshold, when most answers are below FULL, or
  its metrics endpoint does not answer; `idle` when it never ran.
- topic→worker edge: the worker group's lag on the topic (`lag_warn`, `lag_alert`), and red
  when the worker is down; other edges take the colour of their worker end.
- serving: also `warn` when a ranker input feature drifted from its training distribution
  (PSI at or over `skew_psi_drift`, `analytics/skew.py`); features at the warning level are
  named in the detail only.
- topic: `down` when the broker does not answer. store: its own probe.
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, Field

from streamrec.analytics.dashboard.topology import EDGES, NODES, consumer_group
from streamrec.infra.settings import AnalyticsSettings

Status = Literal["ok", "warn", "down", "idle", "stopped"]
_RANK: dict[str, int] = {"idle": 0, "stopped": 0, "ok": 1, "warn": 2, "down": 3}


class WorkerObs(BaseModel):
    """What the collector saw of one worker in the last interval."""

    name: str
    live: bool
    ever_ran: bool = False
    stopped_at: float | None = Field(None, description="its clean stop, when that is the last news")
    scrape_ok: bool = True
    pids: list[int] = Field(default_factory=list)
    events_per_s: float = 0.0
    failed_per_s: float = 0.0
    p95_s: float | None = None
    p95_kind: Literal["request", "batch"] = "batch"
    breakers_open: list[str] = Field(default_factory=list)
    queue_depth: float = 0.0
    levels_per_s: dict[str, float] = Field(default_factory=dict)
    cache_hit_ratio: float | None = None
    redelivered_per_s: float = Field(
        0.0, description="messages seen again after a restart or rebalance (not late data)"
    )
    stuck: str | None = Field(None, description="why the worker says it cannot make progress")


class Observation(BaseModel):
    workers: dict[str, WorkerObs]
    lags: dict[str, dict[str, int]] = Field(description="group -> topic -> lag")
    groups: dict[str, str] = Field(
        default_factory=dict, description="worker -> the consumer group it registered with"
    )
    kafka_ok: bool
    stores: dict[str, tuple[Status, str]] = Field(description="store name -> (status, detail)")
    skew_drift: list[str] = Field(
        default_factory=list, description="the promoted ranker's features judged drift"
    )
    skew_warn: list[str] = Field(
        default_factory=list, description="the promoted ranker's features judged warn"
    )


class NodeState(BaseModel):
    id: str
    kind: str
    label: str
    col: float
    row: float
    status: Status
    detail: str = ""


class EdgeState(BaseModel):
    source: str
    target: str
    status: Status
    detail: str = ""


def worst(*statuses: Status) -> Status:
    return max(statuses, key=lambda s: _RANK[s]) if statuses else "idle"


def group_of(obs: Observation, worker: str) -> str:
    return obs.groups.get(worker) or consumer_group(worker)


def _worker_lag(obs: Observation, name: str) -> int:
    return sum(obs.lags.get(group_of(obs, name), {}).values())


def worker_status(w: WorkerObs, lag: int, cfg: AnalyticsSettings) -> tuple[Status, str]:
    if not w.live and w.stopped_at is not None:
        at = time.strftime("%H:%M:%S UTC", time.gmtime(w.stopped_at))
        return "stopped", f"stopped cleanly {at}"
    if not w.live:
        return ("down", "heartbeat missing") if w.ever_ran else ("idle", "not running")
    if w.stuck:
        return "down", f"stuck: {w.stuck}"
    if w.breakers_open:
        return "down", "breaker open: " + ", ".join(sorted(w.breakers_open))
    notes: list[str] = [f"{w.events_per_s:.0f} ev/s"]
    status: Status = "ok"
    handled = w.events_per_s + w.failed_per_s
    if handled and w.failed_per_s / handled > cfg.error_warn_ratio:
        status = "warn"
        notes.append(f"errors {w.failed_per_s / handled:.0%}")
    if w.p95_s is not None:
        notes.append(f"p95 {w.p95_s * 1000:.0f} ms")
        limit = cfg.request_latency_warn_s if w.p95_kind == "request" else cfg.latency_warn_s
        if w.p95_s > limit:
            status = "warn"
    if w.cache_hit_ratio is not None:
        notes.append(f"hit {w.cache_hit_ratio:.0%}")
    if w.redelivered_per_s:
        notes.append(f"redelivered {w.redelivered_per_s:.0f}/s")  # after a restart: not late
    degraded = sum(v for k, v in w.levels_per_s.items() if k != "FULL")
    if w.levels_per_s and degraded / max(sum(w.levels_per_s.values()), 1e-9) > 0.5:
        status = "warn"
        notes.append("mostly degraded")
    if lag:
        notes.append(f"lag {lag}")
        if lag > cfg.lag_warn:
            status = "warn"
    if w.queue_depth:
        notes.append(f"queue {w.queue_depth:.0f}")
    if not w.scrape_ok:
        status = "warn"
        notes.append("metrics unreachable")
    return status, ", ".join(notes)


def skew_status(
    status: Status, detail: str, drift: list[str], warned: list[str]
) -> tuple[Status, str]:
    """A live serving node's colour and detail with the skew check's flag added."""
    if status in ("down", "idle", "stopped"):
        return status, detail
    notes = [detail] if detail else []
    if drift:
        status = worst(status, "warn")
        notes.append("skew drift: " + ", ".join(drift))
    if warned:
        notes.append("skew warn: " + ", ".join(warned))
    return status, ", ".join(notes)


def lag_status(lag: int, cfg: AnalyticsSettings) -> Status:
    if lag > cfg.lag_alert:
        return "down"
    return "warn" if lag > cfg.lag_warn else "ok"


def assess(obs: Observation, cfg: AnalyticsSettings) -> tuple[list[NodeState], list[EdgeState]]:
    """Colour every node and edge of the topology from one observation."""
    status: dict[str, tuple[Status, str]] = {}
    for node in NODES:
        if node.kind == "worker":
            w = obs.workers.get(node.name) or WorkerObs(name=node.name, live=False)
            status[node.id] = worker_status(w, _worker_lag(obs, node.name), cfg)
            if node.name == "serving":
                status[node.id] = skew_status(*status[node.id], obs.skew_drift, obs.skew_warn)
        elif node.kind == "topic":
            status[node.id] = ("ok", "") if obs.kafka_ok else ("down", "broker unreachable")
        else:
            status[node.id] = obs.stores.get(node.name, ("idle", "unknown"))
    nodes = [
        NodeState(**n.model_dump(), status=status[n.id][0], detail=status[n.id][1]) for n in NODES
    ]
    edges = []
    for e in EDGES:
        src, dst = status[e.source][0], status[e.target][0]
        if e.source.startswith("topic:") and e.target.startswith("worker:"):
            worker = e.target.split(":", 1)[1]
            topic = e.source.split(":", 1)[1]
            lag = obs.lags.get(group_of(obs, worker), {}).get(topic)
            if dst in ("down", "idle", "stopped"):
                edges.append(EdgeState(source=e.source, target=e.target, status=dst))
            elif lag is None:
                edges.append(EdgeState(source=e.source, target=e.target, status=worst(src, dst)))
            else:
                edges.append(
                    EdgeState(
                        source=e.source,
                        target=e.target,
                        status=worst(lag_status(lag, cfg), "down" if src == "down" else "ok"),
                        detail=f"lag {lag}",
                    )
                )
        else:
            end = src if e.source.startswith("worker:") else dst
            edges.append(EdgeState(source=e.source, target=e.target, status=end))
    return nodes, edges
