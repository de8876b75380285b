"""Starting, finding and stopping the local stack's processes by pid file.

Written by hand because the job is small and specific: a pid file per part, a check that the
pid still belongs to the program we started (pids get reused), and polling a readiness
probe with a deadline. Nothing here sleeps to paper over a race: every wait polls a real
condition and gives up with a clear error naming the log to read.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
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


def ensure_ports_free(host: str, ports: dict[str, int]) -> None:
    taken = [f"{what} port {port}" for what, port in ports.items() if port_in_use(host, port)]
    if taken:
        raise PortInUseError(
            f"{', '.join(taken)} on {host} already in use by another process; stop it or choose "
            "other ports (STREAMREC_STACK__KAFKA_PORT, STREAMREC_STACK__KAFKA_CONTROLLER_PORT, "
            "STREAMREC_STACK__REDIS_PORT)"
        )


def free_port() -> int:
    """A port the OS considers free right now (tests use it to avoid clashes)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(
    argv: Sequence[str], log_file: Path, pid_file: Path, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start `argv` in its own session (so it outlives the CLI), output to `log_file`."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            start_new_session=True,
        )
    pid_file.write_text(f"{proc.pid}\n")
    return proc


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
