"""Running the dashboard in the background (`streamrec dashboard --detach`, the demo).

The detached dashboard outlives the command that started it, like the stack: its pid file is
`<state>/dashboard.pid`, its log `<state>/logs/dashboard.log`; `streamrec dashboard --stop`
ends it. Starting is idempotent: a dashboard already answering on the port is reused.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from streamrec.analytics.errors import AnalyticsError
from streamrec.infra import processes
from streamrec.infra.settings import Settings


def url_of(settings: Settings) -> str:
    a = settings.analytics
    return f"http://{a.dashboard_host}:{a.dashboard_port}/"


def pid_file(settings: Settings) -> Path:
    return settings.state_dir / "dashboard.pid"


def answers(settings: Settings) -> bool:
    try:
        return httpx.get(url_of(settings) + "api/state", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def start_detached(settings: Settings, timeout_s: float = 60.0) -> str:
    """Start the dashboard in its own session (or reuse a running one); returns its URL."""
    if answers(settings):
        return url_of(settings)
    log_file = settings.state_dir / "logs" / "dashboard.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamrec", "dashboard"],
            env={**os.environ, **settings.to_env()},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    pid_file(settings).write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + timeout_s
    while not answers(settings):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AnalyticsError(f"the dashboard did not start; see {log_file}")
        time.sleep(0.2)  # polling a real condition, bounded by the deadline
    return url_of(settings)


def stop_detached(settings: Settings) -> bool:
    """Stop a dashboard started with `start_detached`; False when none was running."""
    path = pid_file(settings)
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return False
    processes.stop(pid, path, timeout_s=10)
    return True
