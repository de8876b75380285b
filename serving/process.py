"""`streamrec serve` as a child process (the demo and the benchmark start it this way).

Responsibilities: start it with the parent's settings in the environment, wait until
`/readyz` says ready (or the process dies), stop it by pid (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import httpx

from streamrec.infra import processes
from streamrec.infra.settings import Settings
from streamrec.serving.errors import ServingError

_FEAST_PROMETHEUS_ENV = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")
_FEAST_PROMETHEUS_PREFIX = os.path.join(tempfile.gettempdir(), "feast_metrics_")


class ServeProcess:
    def __init__(self, settings: Settings, *args: str) -> None:
        self.settings = settings
        self.args = args
        self.url = f"http://{settings.serving.host}:{settings.serving.port}"
        self.log_file = settings.state_dir / "logs" / "serve.log"
        self.pid_file = settings.state_dir / "workers" / "serve.pid"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout_s: float = 180.0) -> ServeProcess:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "streamrec", "serve", "--loglevel", "warning", *self.args]
        env = {**os.environ, **self.settings.to_env()}
        # Importing Feast (`feast.metrics`) sets these in the parent's environment; inherited,
        # they put every metric of the worker in prometheus_client's multiprocess mode: a
        # getpid() system call and an mmap write per update, ~40 system calls a request
        # (issue 6, ADR 0055). The worker keeps one registry per process and needs neither.
        for name in _FEAST_PROMETHEUS_ENV:
            if env.get(name, "").startswith(_FEAST_PROMETHEUS_PREFIX):
                env.pop(name)
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                argv,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{self.proc.pid}\n")
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServingError(f"streamrec serve exited; see {self.log_file}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)  # polling readiness
        self.stop()
        raise ServingError(
            f"streamrec serve not ready in {ready_timeout_s:.0f} s; see {self.log_file}"
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            processes.stop(self.proc.pid, self.pid_file, timeout_s=timeout_s)
            self.proc.wait()
        self.pid_file.unlink(missing_ok=True)
