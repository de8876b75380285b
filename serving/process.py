"""`streamrec serve` as a child process (the demo and the benchmark start it this way).

Responsibilities: start it with the parent's settings in the environment, wait until
`/readyz` says ready (or the process dies), stop it by pid (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import httpx

from streamrec.infra.errors import StartTimeoutError
from streamrec.infra.processes import ChildProcess, streamrec_argv
from streamrec.infra.settings import Settings
from streamrec.serving.errors import ServingError


class ServeProcess(ChildProcess):
    def __init__(self, settings: Settings, *args: str) -> None:
        super().__init__(
            "streamrec serve",
            log_file=settings.state_dir / "logs" / "serve.log",
            pid_file=settings.state_dir / "workers" / "serve.pid",
        )
        self.settings = settings
        self.args = args
        self.url = f"http://{settings.serving.host}:{settings.serving.port}"

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self, ready_timeout_s: float = 180.0) -> ServeProcess:
        argv = streamrec_argv("serve", "--loglevel", "warning", *self.args)
        try:
            self.launch(
                argv, env=self.settings.to_env(), ready=self.ready, timeout_s=ready_timeout_s
            )
        except StartTimeoutError as exc:
            raise ServingError(str(exc)) from exc
        return self
