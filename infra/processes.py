"""Starting, finding and stopping the local stack's processes and our own child processes.

Written by hand because the job is small and specific: a pid file per part, a check that the
pid still belongs to the program we started (pids get reused), and polling a readiness
probe with a deadline. Nothing here sleeps to paper over a race: every wait polls a real
condition and gives up with a clear error naming the log to read.

`ChildProcess` is the one way a parent starts `python -m streamrec ...` (the server, workers,
the local LLM provider, the dashboard): its own session, output appended to a log file, a pid
file, the parent's environment less what Feast set for itself (`child_env`), an optional
readiness probe, and SIGTERM then SIGKILL to stop it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from streamrec.infra.errors import PortInUseError, StartTimeoutError


def read_pid(pid_file: Path, marker: str) -> int | None:
    """The pid in `pid_file` if that process is alive and its command line contains `marker`."""
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    if marker not in cmdline or _is_zombie(pid):
        return None
    return pid


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (FileNotFoundError, IndexError):
        return True


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


STACK_PORT_VARIABLES = (
    "STREAMREC_STACK__KAFKA_PORT, STREAMREC_STACK__KAFKA_CONTROLLER_PORT, "
    "STREAMREC_STACK__REDIS_PORT"
)
CLUSTER_PORT_VARIABLES = (
    "STREAMREC_STACK__KAFKA_PORT, STREAMREC_STACK__KAFKA_CONTROLLER_PORT, "
    "STREAMREC_STACK__KAFKA_EXTRA_PORTS, STREAMREC_STACK__KAFKA_EXTRA_CONTROLLER_PORTS"
)


def ensure_ports_free(
    host: str, ports: dict[str, int], variables: str = STACK_PORT_VARIABLES
) -> None:
    """`PortInUseError` naming each of `ports` (label -> port) that is taken, and the
    settings (`variables`) that choose others."""
    taken = [f"{what} port {port}" for what, port in ports.items() if port_in_use(host, port)]
    if taken:
        raise PortInUseError(
            f"{', '.join(taken)} on {host} already in use by another process; stop it or choose "
            f"other ports ({variables})"
        )


_handed_out: set[int] = set()


def free_port() -> int:
    """A port the OS considers free right now, and never one this process was given before:
    the OS can offer the same ephemeral port to two binds in a row once the first socket is
    closed, and a broker given it for both its client and controller listeners fails."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def spawn(
    argv: Sequence[str],
    log_file: Path,
    pid_file: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` in its own session (so it outlives the CLI), output to `log_file`."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=None if env is None else dict(env),
            start_new_session=True,
        )
    pid_file.write_text(f"{proc.pid}\n")
    return proc


# Importing Feast (`feast.metrics`) points these at a temporary directory of its own in the
# importing process's environment. Inherited, they put every prometheus_client metric of a
# child in multiprocess mode: a getpid() system call and an mmap write per update, ~40 system
# calls a request in the server (ADR 0055). Our children keep one registry per process and
# need neither; a directory someone set on purpose (not Feast's) is passed on.
FEAST_PROMETHEUS_ENV = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")
FEAST_PROMETHEUS_PREFIX = os.path.join(tempfile.gettempdir(), "feast_metrics_")


def child_env(
    overlay: Mapping[str, str] | None = None, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """`base` (default: this process's environment) with `overlay` on top, less Feast's
    metrics directories."""
    env = {**(os.environ if base is None else base), **(overlay or {})}
    for name in FEAST_PROMETHEUS_ENV:
        if env.get(name, "").startswith(FEAST_PROMETHEUS_PREFIX):
            del env[name]
    return env


def streamrec_argv(*args: str) -> list[str]:
    """The command line of `streamrec ARGS` run by this interpreter."""
    return [sys.executable, "-m", "streamrec", *args]


class ChildProcess:
    """One child process: launched in its own session with its output in `log_file` and its
    pid in `pid_file`, checked with `alive`, ended with `stop` (SIGTERM, then SIGKILL after
    `stop_timeout_s`) or `kill` (SIGKILL at once, what a crash looks like)."""

    def __init__(
        self, what: str, log_file: Path, pid_file: Path, stop_timeout_s: float = 20.0
    ) -> None:
        self.what = what
        self.log_file = log_file
        self.pid_file = pid_file
        self.stop_timeout_s = stop_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None

    def launch(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        ready: Callable[[], bool] | None = None,
        timeout_s: float = 60.0,
    ) -> subprocess.Popen[bytes]:
        """Start `argv` with `child_env(env)`; with `ready`, wait until it answers true.

        A child that exits first, or is not ready by the deadline, is stopped and reported
        with `StartTimeoutError` naming its log.
        """
        proc = spawn(argv, self.log_file, self.pid_file, env=child_env(env))
        self.proc = proc
        if ready is not None:
            try:
                wait_until(
                    ready,
                    what=self.what,
                    timeout_s=timeout_s,
                    log_file=self.log_file,
                    alive=lambda: proc.poll() is None,
                )
            except StartTimeoutError:
                self.stop()
                raise
        return proc

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float | None = None) -> None:
        if self.alive():
            assert self.proc is not None
            limit = self.stop_timeout_s if timeout_s is None else timeout_s
            stop(self.proc.pid, self.pid_file, timeout_s=limit)
            self.proc.wait()
        self.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.pid_file.unlink(missing_ok=True)

    @property
    def log(self) -> Path:
        return self.log_file

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until(
    probe: Callable[[], bool],
    *,
    what: str,
    timeout_s: float,
    log_file: Path,
    alive: Callable[[], bool],
) -> None:
    """Poll `probe` until it is true; fail early if the process died, or at the deadline."""
    deadline = time.monotonic() + timeout_s
    interval = 0.05
    while True:
        if probe():
            return
        if not alive():
            raise StartTimeoutError(
                f"{what} exited during start-up; see {log_file}:\n{_tail(log_file)}"
            )
        if time.monotonic() > deadline:
            raise StartTimeoutError(
                f"{what} did not answer within {timeout_s:.0f} s; see {log_file}"
            )
        time.sleep(interval)  # polling a real condition, bounded by the deadline
        interval = min(interval * 1.5, 0.5)


def stop(pid: int, pid_file: Path, timeout_s: float = 30.0) -> None:
    """SIGTERM, wait up to `timeout_s` for a clean exit, then SIGKILL; remove the pid file."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.02)
    pid_file.unlink(missing_ok=True)


def kill(pid: int, pid_file: Path, timeout_s: float = 10.0) -> None:
    """SIGKILL at once (a crash, for fault tests), wait until it is gone; remove the pid file."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    pid_file.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not _is_zombie(pid)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
