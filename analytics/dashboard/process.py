"""Running the dashboard in the background (`streamrec dashboard --detach`, the demo).

The detached dashboard outlives the command that started it, like the stack: its pid file is
`<state>/dashboard.pid`, its log `<state>/logs/dashboard.log`; `streamrec dashboard --stop`
ends it. Starting is idempotent: a dashboard already answering on the port is reused.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from streamrec.analytics.errors import AnalyticsError
from streamrec.infra import processes
from streamrec.infra.errors import StartTimeoutError
from streamrec.infra.processes import ChildProcess, streamrec_argv
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
    child = ChildProcess(
        "the dashboard",
        log_file=settings.state_dir / "logs" / "dashboard.log",
        pid_file=pid_file(settings),
        stop_timeout_s=10.0,
    )
    try:
        child.launch(
            streamrec_argv("dashboard"),
            env=settings.to_env(),
            ready=lambda: answers(settings),
            timeout_s=timeout_s,
        )
    except StartTimeoutError as exc:
        raise AnalyticsError(str(exc)) from exc
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
