"""`serving.workers` > 1: N serving processes on one host, kept running.

Each child is a whole `streamrec serve` of its own (`serving.reuse_port` set): it binds the
port with SO_REUSEPORT, joins the request topic's consumer group, and registers its own
heartbeat and metrics, so the dashboard lists every process. The supervisor only starts them,
replaces one that dies (its partitions of the request topic move to the others meanwhile, and
its uncommitted requests are delivered again), and stops them all on SIGINT/SIGTERM. uvicorn's
own multi-worker mode shares one inherited socket and registers no per-process heartbeat.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections import deque

from streamrec.infra.processes import child_env as clean_env
from streamrec.infra.processes import streamrec_argv
from streamrec.infra.settings import Settings
from streamrec.serving.errors import ServingError

log = logging.getLogger(__name__)

# A child that dies this often this fast is failing to start, not crashing under load.
MAX_QUICK_DEATHS = 5
QUICK_DEATH_WINDOW_S = 60.0
STOP_GRACE_S = 15.0


def child_argv(http: bool, topic: bool, log_level: str) -> list[str]:
    return streamrec_argv(
        "serve",
        "--http" if http else "--no-http",
        "--topic" if topic else "--no-topic",
        "--loglevel",
        log_level,
    )


def child_env(settings: Settings) -> dict[str, str]:
    return clean_env({**settings.to_env(), "STREAMREC_SERVING__REUSE_PORT": "true"})


class Supervisor:
    def __init__(self, settings: Settings, http: bool, topic: bool, log_level: str) -> None:
        self.n = settings.serving.workers
        self.argv = child_argv(http, topic, log_level)
        self.env = child_env(settings)
        self.children: list[subprocess.Popen[bytes] | None] = [None] * self.n
        self.deaths: deque[float] = deque()
        self.stopping = threading.Event()

    def _start(self, slot: int) -> None:
        self.children[slot] = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL)
        log.info("serving process %d of %d: pid %d", slot + 1, self.n, self.children[slot].pid)

    def run(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stopping.set())
        for slot in range(self.n):
            self._start(slot)
        try:
            while not self.stopping.wait(0.5):  # a poll of the children, not a race
                self._replace_dead()
        finally:
            self.stop()

    def _replace_dead(self) -> None:
        for slot, proc in enumerate(self.children):
            if proc is None or proc.poll() is None:
                continue
            now = time.monotonic()
            self.deaths.append(now)
            while self.deaths and now - self.deaths[0] > QUICK_DEATH_WINDOW_S:
                self.deaths.popleft()
            if len(self.deaths) >= MAX_QUICK_DEATHS:
                raise ServingError(
                    f"serving processes died {len(self.deaths)} times within "
                    f"{QUICK_DEATH_WINDOW_S:.0f} s (last exit code {proc.returncode}): see "
                    "their log above"
                )
            log.warning(
                "serving process pid %d exited with %s; starting a replacement",
                proc.pid,
                proc.returncode,
            )
            self._start(slot)

    def stop(self) -> None:
        live = [p for p in self.children if p is not None and p.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in live:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def supervise(settings: Settings, http: bool, topic: bool, log_level: str) -> None:
    if http:
        # Fail here, once, with the reason, rather than in every child in turn.
        from streamrec.serving.runner import bound_socket

        bound_socket(settings.serving.host, settings.serving.port, reuse_port=True).close()
    log.info("supervising %d serving processes (pid %d)", settings.serving.workers, os.getpid())
    Supervisor(settings, http, topic, log_level).run()
