"""Prometheus metrics for every worker, and the live-worker registry the dashboard reads.

Responsibilities:
- one set of metric objects with one naming scheme (`streamrec_*`), shared by every
  processor and the serving app, so the dashboard and any Prometheus read them the same way;
- `serve(settings, name, group=None)`: expose this process's metrics over HTTP on
  `settings.analytics.metrics_port` (0 = a free port) and register the worker in Redis
  (name, metrics URL, pid, heartbeat time) with a short TTL, refreshed by a daemon thread;
  a worker that dies simply stops refreshing and its key expires (the dashboard then
  shows it missing), while a clean stop (`stop()`, run on SIGTERM/SIGINT) overwrites it with
  a last record, `state="stopped"` and `stopped_at`, kept `analytics.stopped_ttl_s`, which a
  kill -9 cannot write (the dashboard then shows it stopped, not red); with its consumer
  `group`, the same thread sets `streamrec_consumer_lag` for the group every 5 s
  (committed vs end offsets);
- the same endpoint answers `/healthz` (the process answers) and `/readyz` (200 while the
  worker makes progress, 503 with the reason once it called `mark_stuck`); a stuck worker's
  heartbeat says `state="stuck"` with the reason, written at once, before the worker exits
  non-zero for its supervisor to restart it (`exit_stuck`);
- `attach(app, settings, name, group=None)`: the same for a Faust app (group: the app's
  id), started with the worker and stopped with it;
- `live_workers(settings)`: the registered workers whose heartbeat has not expired;
  `stopped_workers(settings)`: the stop records of workers that stopped cleanly.

Usage (a Faust processor; see processors/interaction_counter.py)::

    from streamrec.streams import metrics
    app = create_app(settings, group)
    metrics.attach(app, settings, NAME)
    ...
    metrics.EVENTS_PROCESSED.labels(NAME, EVENTS_INTERACTIONS.name).inc(valid)
    metrics.EVENTS_FAILED.labels(NAME, EVENTS_INTERACTIONS.name, "schema").inc(dead)
    with metrics.PROCESSING_SECONDS.labels(NAME).time():
        ...

Any other process (serving, a plain consumer)::

    handle = metrics.serve(settings, "serving")   # handle.url, handle.stop()

Metrics (type; labels; meaning):
- streamrec_events_processed_total (counter; processor, topic): messages handled successfully
- streamrec_events_failed_total (counter; processor, topic, reason): dead-lettered or errored;
  reason is a short code (schema, store, ...)
- streamrec_processing_seconds (histogram; processor): time to handle one batch (or event)
- streamrec_request_seconds (histogram; route): serving request latency inside the worker
- streamrec_consumer_lag (gauge; topic, group): end minus committed offset, over partitions
- streamrec_queue_depth (gauge; worker, queue): items waiting in a bounded in-process queue
- streamrec_breaker_state (gauge; worker, dependency): 0 closed, 1 half-open, 2 open
- streamrec_degradation_total (counter; level): answers by level (FULL, STALE_FEATURES, ...)
- streamrec_cache_requests_total (counter; cache, result): result "hit" or "miss"
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any, Literal
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import redis
from prometheus_client import Counter, Gauge, Histogram, make_wsgi_app
from pydantic import BaseModel, ConfigDict, Field

from streamrec.infra.redis_clients import sync_client
from streamrec.infra.settings import Settings
from streamrec.topics.stores import WORKER_HEARTBEAT

EVENTS_PROCESSED = Counter(
    "streamrec_events_processed", "Messages handled successfully.", ["processor", "topic"]
)
EVENTS_FAILED = Counter(
    "streamrec_events_failed",
    "Messages that failed (dead-lettered or errored).",
    ["processor", "topic", "reason"],
)
PROCESSING_SECONDS = Histogram(
    "streamrec_processing_seconds",
    "Time to handle one batch (or one event).",
    ["processor"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
REQUEST_SECONDS = Histogram(
    "streamrec_request_seconds",
    "Serving request latency inside the worker.",
    ["route"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0),
)
CONSUMER_LAG = Gauge(
    "streamrec_consumer_lag", "End offset minus committed offset.", ["topic", "group"]
)
QUEUE_DEPTH = Gauge(
    "streamrec_queue_depth", "Items waiting in a bounded queue.", ["worker", "queue"]
)
BREAKER_STATE = Gauge(
    "streamrec_breaker_state", "0 closed, 1 half-open, 2 open.", ["worker", "dependency"]
)
DEGRADATION = Counter("streamrec_degradation", "Answers by degradation level.", ["level"])
CACHE_REQUESTS = Counter(
    "streamrec_cache_requests", "Cache lookups by result (hit/miss).", ["cache", "result"]
)

REDELIVERED = Counter(
    "streamrec_events_redelivered",
    "Messages seen again after a restart or rebalance (already applied; not late data).",
    ["processor", "topic"],
)

BREAKER_CLOSED, BREAKER_HALF_OPEN, BREAKER_OPEN = 0, 1, 2
LAG_INTERVAL_S = 5.0
# Exit status of a worker that found itself unable to make progress (EX_TEMPFAIL: a
# supervisor restarts it; the stuck heartbeat tells why).
EXIT_STUCK = 75
log = logging.getLogger(__name__)


class Readiness:
    """Whether this process still makes progress. One worker runs per process, so this is
    process-wide: whatever finds the worker stuck says so here, and every endpoint and
    heartbeat of the process reports it."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.since: float | None = None
        self._listeners: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self.reason is None

    def mark_stuck(self, reason: str) -> None:
        with self._lock:
            if self.reason is None:
                self.reason, self.since = reason, time.time()
            listeners = list(self._listeners)
        for listener in listeners:  # heartbeats: written now, not at the next beat
            with contextlib.suppress(Exception):
                listener()

    def listen(self, callback: Callable[[], None]) -> None:
        with self._lock:
            self._listeners.append(callback)

    def forget(self, callback: Callable[[], None]) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._listeners.remove(callback)

    def reset(self) -> None:
        """Ready again (tests; a process restarted by its supervisor starts ready anyway)."""
        with self._lock:
            self.reason = self.since = None


READINESS = Readiness()


def mark_stuck(reason: str) -> None:
    """Say this worker cannot make progress: /readyz answers 503 and the heartbeat says
    `stuck` with `reason`, at once."""
    log.critical("worker stuck: %s", reason)
    READINESS.mark_stuck(reason)


def exit_stuck(reason: str) -> None:
    """`mark_stuck`, then end the process with `EXIT_STUCK` without running its shutdown:
    a worker that cannot progress may hang in it (a fatal embedded ClickHouse, a broken
    librdkafka). Nothing uncommitted is committed on the way out, so it is redone."""
    mark_stuck(reason)
    for stream in (sys.stderr, sys.stdout):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(EXIT_STUCK)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # scrapes and probes every few seconds: no access log


def _health_app(metrics_app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """/healthz and /readyz, and the Prometheus exposition on every other path."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path not in ("/healthz", "/readyz"):
            return metrics_app(environ, start_response)
        if path == "/healthz" or READINESS.ready:
            body, status = {"status": "ok"}, "200 OK"
        else:
            body = {"status": "stuck", "reason": READINESS.reason, "since": READINESS.since}
            status = "503 Service Unavailable"
        data = json.dumps(body).encode()
        start_response(
            status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        )
        return [data]

    return app


class WorkerBeat(BaseModel):
    """What a live worker publishes under `WORKER_HEARTBEAT` (JSON), refreshed every beat."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str
    pid: int
    host: str
    metrics_url: str
    group: str | None = None
    started_at: float
    heartbeat_at: float
    state: Literal["running", "stuck", "stopped"] = "running"
    stopped_at: float | None = None
    reason: str | None = Field(None, description="why a stuck worker cannot make progress")


class MetricsHandle:
    """A running metrics endpoint plus its heartbeat thread; `stop()` ends both."""

    def __init__(self, settings: Settings, name: str, group: str | None = None) -> None:
        cfg = settings.analytics
        self.name = name
        self.group = group
        self._settings = settings
        self._lag_due = 0.0
        self._server = make_server(
            cfg.metrics_host,
            cfg.metrics_port,
            _health_app(make_wsgi_app()),
            _ThreadingServer,
            handler_class=_QuietHandler,
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"metrics-{name}", daemon=True
        )
        self._thread.start()
        self.port: int = self._server.server_port
        self.base_url = f"http://{cfg.metrics_host}:{self.port}"
        self.url = f"http://{cfg.metrics_host}:{self.port}/metrics"
        self._interval = cfg.heartbeat_interval_s
        self._ttl = cfg.heartbeat_ttl_s
        self._stopped_ttl = cfg.stopped_ttl_s
        self._key = WORKER_HEARTBEAT.key(name=name, pid=str(os.getpid()))
        self._redis = sync_client(settings, socket_timeout=1.0)
        self._started = time.time()
        self._admin: Any = None
        self._stopped = threading.Event()
        self._clear_stop_records()  # an earlier clean stop of this name is history now
        self.beat()  # registered before serve() returns, so callers can wait on it
        READINESS.listen(self.beat)
        self._beater = threading.Thread(target=self._run, name=f"heartbeat-{name}", daemon=True)
        self._beater.start()

    def _record(self, **extra: Any) -> WorkerBeat:
        if not READINESS.ready and "state" not in extra:
            extra = {**extra, "state": "stuck", "reason": READINESS.reason}
        return WorkerBeat(
            name=self.name,
            pid=os.getpid(),
            host=socket.gethostname(),
            metrics_url=self.url,
            group=self.group,
            started_at=self._started,
            heartbeat_at=time.time(),
            **extra,
        )

    def _clear_stop_records(self) -> None:
        with contextlib.suppress(redis.RedisError):
            for key, value in _registrations(self._redis, self.name):
                if WorkerBeat.model_validate(json.loads(value)).state == "stopped":
                    self._redis.delete(key)

    def beat(self) -> None:
        record = self._record()
        # Redis down: the worker keeps working; the dashboard shows it missing.
        with contextlib.suppress(redis.RedisError):
            self._redis.set(self._key, record.model_dump_json(), ex=self._ttl)

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            self.beat()
            if self.group and time.monotonic() >= self._lag_due:
                self._lag_due = time.monotonic() + LAG_INTERVAL_S
                self.report_lag()

    def report_lag(self) -> None:
        """Set `streamrec_consumer_lag` for this worker's group (committed vs end offsets)."""
        from streamrec.streams.errors import LagError
        from streamrec.streams.lag import (  # confluent-kafka: only when used
            admin_client,
            consumer_lags,
        )

        if self._admin is None:
            self._admin = admin_client(self._settings)
        try:
            lags = consumer_lags(self._admin, groups=[self.group]).get(self.group, {})
        except LagError:
            return  # the broker is away: the gauge keeps its last value, the dashboard says why
        for topic, lag in lags.items():
            CONSUMER_LAG.labels(topic, self.group).set(lag)

    def stop(self) -> None:
        """Leave the stop record and close the endpoint (a crash skips this; the TTL covers it)."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        READINESS.forget(self.beat)
        self._beater.join(timeout=self._interval + 2)  # no running beat after the stop record
        record = self._record(state="stopped", stopped_at=time.time())
        with contextlib.suppress(redis.RedisError):
            self._redis.set(self._key, record.model_dump_json(), ex=self._stopped_ttl)
        self._server.shutdown()
        self._server.server_close()
        self._redis.close()


def serve(settings: Settings, name: str, group: str | None = None) -> MetricsHandle:
    """Expose this process's metrics over HTTP and register it as live worker `name`.

    With `group` (its Kafka consumer group), the heartbeat thread also keeps
    `streamrec_consumer_lag{group=...}` current every LAG_INTERVAL_S.
    """
    return MetricsHandle(settings, name, group)


def attach(app: Any, settings: Settings, name: str, group: str | None = None) -> None:
    """Serve metrics and heartbeat for the lifetime of Faust `app` (started with the worker).

    The consumer group whose lag is reported defaults to the app's id (`create_app`'s group).
    """
    handle: dict[str, MetricsHandle] = {}

    @app.task
    async def _metrics_start() -> None:
        handle["h"] = serve(settings, name, group or app.conf.id)

    @app.on_before_shutdown.connect
    def _metrics_stop(sender: Any, **kwargs: Any) -> None:
        if "h" in handle:
            handle.pop("h").stop()


def _registrations(client: redis.Redis, name: str = "*") -> list[tuple[bytes, bytes]]:
    keys = list(client.scan_iter(match=WORKER_HEARTBEAT.key(name=name, pid="*"), count=500))
    values = client.mget(keys) if keys else []
    return [(k, v) for k, v in zip(keys, values, strict=True) if v]


def registered_workers(settings: Settings) -> list[WorkerBeat]:
    """Every record in the registry, running or stopped, by name then pid."""
    client = sync_client(settings, socket_timeout=1.0)
    try:
        values = [v for _, v in _registrations(client)]
    finally:
        client.close()
    beats = [WorkerBeat.model_validate(json.loads(v)) for v in values]
    return sorted(beats, key=lambda b: (b.name, b.pid))


def live_workers(settings: Settings) -> list[WorkerBeat]:
    """Workers whose heartbeat key has not expired (running or stuck), by name then pid."""
    return [b for b in registered_workers(settings) if b.state != "stopped"]


def stopped_workers(settings: Settings) -> list[WorkerBeat]:
    """The stop records of workers that stopped cleanly (kept `analytics.stopped_ttl_s`)."""
    return [b for b in registered_workers(settings) if b.state == "stopped"]
