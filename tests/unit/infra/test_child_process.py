"""The child-process launcher with real (tiny) python children."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from streamrec.infra import processes
from streamrec.infra.errors import StartTimeoutError
from streamrec.infra.processes import FEAST_PROMETHEUS_PREFIX, ChildProcess, child_env


def _child(tmp_path: Path, stop_timeout_s: float = 20.0) -> ChildProcess:
    return ChildProcess(
        "tiny child",
        log_file=tmp_path / "logs" / "child.log",
        pid_file=tmp_path / "pids" / "child.pid",
        stop_timeout_s=stop_timeout_s,
    )


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_child_env_drops_feasts_metrics_dirs_but_keeps_one_set_on_purpose() -> None:
    base = {
        "PATH": "/bin",
        "PROMETHEUS_MULTIPROC_DIR": FEAST_PROMETHEUS_PREFIX + "abc",
        "PROMETHEUS_MULTIPROCESS_DIR": "/srv/metrics",
    }
    env = child_env({"STREAMREC_X": "1"}, base=base)
    assert env == {
        "PATH": "/bin",
        "PROMETHEUS_MULTIPROCESS_DIR": "/srv/metrics",
        "STREAMREC_X": "1",
    }
    assert "PROMETHEUS_MULTIPROC_DIR" in base  # the parent's mapping is left as it was


def test_a_launched_child_gets_the_overlay_without_feasts_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", FEAST_PROMETHEUS_PREFIX + "parent")
    out = tmp_path / "env.json"
    child = _child(tmp_path)
    code = f"import json, os; open({str(out)!r}, 'w').write(json.dumps(dict(os.environ)))"
    child.launch(_python(code), env={"STREAMREC_MARK": "yes"}, ready=out.exists, timeout_s=30)
    child.proc.wait(30)
    env = json.loads(out.read_text())
    assert env["STREAMREC_MARK"] == "yes"
    assert "PROMETHEUS_MULTIPROC_DIR" not in env
    assert env["PATH"]  # the rest of the parent's environment is inherited


def test_output_goes_to_the_log_and_the_pid_to_the_pid_file(tmp_path: Path) -> None:
    child = _child(tmp_path)
    proc = child.launch(_python("print('hello from the child', flush=True)"))
    proc.wait(30)
    assert child.pid_file.read_text().strip() == str(proc.pid)
    assert "hello from the child" in child.log.read_text()
    child.stop()
    assert not child.pid_file.exists()


def test_a_child_that_never_gets_ready_is_stopped_and_named_with_its_log(
    tmp_path: Path,
) -> None:
    child = _child(tmp_path)
    with pytest.raises(
        StartTimeoutError, match=r"tiny child did not answer within 1 s; see .*child\.log"
    ):
        child.launch(_python("import time; time.sleep(60)"), ready=lambda: False, timeout_s=1)
    assert not child.alive()
    assert not child.pid_file.exists()


def test_a_child_that_exits_during_start_up_is_reported_with_its_log_tail(
    tmp_path: Path,
) -> None:
    child = _child(tmp_path)
    code = "import sys; print('cannot bind the port', flush=True); sys.exit(3)"
    with pytest.raises(StartTimeoutError, match="exited during start-up") as info:
        child.launch(_python(code), ready=lambda: False, timeout_s=30)
    assert "cannot bind the port" in str(info.value)


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path: Path) -> None:
    marker = tmp_path / "ignoring"
    code = (
        "import pathlib, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"pathlib.Path({str(marker)!r}).touch(); time.sleep(60)"
    )
    child = _child(tmp_path, stop_timeout_s=0.5)
    child.launch(_python(code), ready=marker.exists, timeout_s=30)
    child.stop()
    assert not child.alive()  # SIGTERM alone would have left it running
    assert not child.pid_file.exists()


def test_stop_is_a_clean_exit_for_a_child_that_handles_sigterm(tmp_path: Path) -> None:
    marker = tmp_path / "ready"
    code = (
        "import pathlib, signal, sys, time\n"
        "def bye(*_):\n"
        "    print('terminating', flush=True)\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        f"pathlib.Path({str(marker)!r}).touch()\n"
        "time.sleep(60)\n"
    )
    child = _child(tmp_path, stop_timeout_s=30)
    child.launch(_python(code), ready=marker.exists, timeout_s=30)
    child.stop()
    assert "terminating" in child.log.read_text()


def test_kill_ends_the_child_at_once(tmp_path: Path) -> None:
    child = _child(tmp_path)
    proc = child.launch(_python("import time; time.sleep(60)"))
    assert child.alive()
    child.kill()
    assert proc.returncode == -9
    assert not child.pid_file.exists()


def test_free_port_never_hands_out_a_port_twice(monkeypatch):
    """The OS may offer the port it just offered (the probe socket is closed by then)."""
    offered = iter([41001, 41001, 41001, 41002])

    class Probe:
        def __enter__(self) -> Probe:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def bind(self, address: tuple[str, int]) -> None:
            self.port = next(offered)

        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(processes.socket, "socket", Probe)
    assert processes.free_port() == 41001
    assert processes.free_port() == 41002
