"""Running `streamrec worker NAME` as a child process (the demo, tests and benchmarks use it).

The child gets the parent's settings through the environment (`Settings.to_env`), so it
talks to the same stack. Output goes to a log file in the state dir.
"""

from __future__ import annotations

from streamrec.infra.processes import ChildProcess, streamrec_argv
from streamrec.infra.settings import Settings


class WorkerProcess(ChildProcess):
    """One worker process: start, alive, stop (SIGTERM, then SIGKILL after a grace period)."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        group: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        tag = group or name
        super().__init__(
            f"worker {name}",
            log_file=settings.state_dir / "logs" / f"worker-{tag}.log",
            pid_file=settings.state_dir / "workers" / f"{tag}.pid",
        )
        self.settings = settings
        self.name = name
        self.group = group
        self.extra_env = extra_env or {}

    def start(self) -> WorkerProcess:
        argv = streamrec_argv("worker", self.name, "--loglevel", "warning")
        if self.group:
            argv += ["--group", self.group]
        self.launch(argv, env={**self.settings.to_env(), **self.extra_env})
        return self

    def __enter__(self) -> WorkerProcess:
        return self.start()
