"""Running `streamrec worker NAME` as a child process (the demo, tests and benchmarks use it).

The child gets the parent's settings through the environment (`Settings.to_env`), so it
talks to the same stack. Output goes to a log file in the state dir.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from streamrec.infra import processes
from streamrec.infra.settings import Settings


class WorkerProcess:
    """One worker process: start, alive, stop (SIGTERM, then SIGKILL after a grace period)."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        group: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.name = name
        self.group = group
        self.extra_env = extra_env or {}
        tag = group or name
        self.log_file = settings.state_dir / "logs" / f"worker-{tag}.log"
        self.pid_file = settings.state_dir / "workers" / f"{tag}.pid"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "streamrec", "worker", self.name, "--loglevel", "warning"]
        if self.group:
            argv += ["--group", self.group]
        env = {**os.environ, **self.settings.to_env(), **self.extra_env}
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{self.proc.pid}\n")
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            processes.stop(self.proc.pid, self.pid_file, timeout_s=timeout_s)
            self.proc.wait()
        self.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL, no clean shutdown: what a crash looks like to the consumer group."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
        self.pid_file.unlink(missing_ok=True)

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def log(self) -> Path:
        return self.log_file
