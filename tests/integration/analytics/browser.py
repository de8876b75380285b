"""Headless Debian chromium for page tests (flags from /work/shared/NOTES.md: no sandbox, no
GPU, no network side-traffic, a fresh profile per run)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
    "--window-size=1240,1000",
    # Let the page's scripts run (and its first poll complete) before the dump.
    "--virtual-time-budget=4000",
)


def chromium() -> str:
    path = shutil.which("chromium")
    assert path, "Debian's chromium is required (apt-get install -y chromium; see .ci/run)"
    return path


def _run(url: str, *extra: str, timeout_s: float = 120.0) -> str:
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        done = subprocess.run(
            [chromium(), *FLAGS, f"--user-data-dir={profile}", *extra, url],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def dump_dom(url: str) -> str:
    """The DOM after the page's scripts ran, as HTML."""
    return _run(url, "--dump-dom")


def screenshot(url: str, path: Path) -> Path:
    _run(url, f"--screenshot={path}")
    assert path.exists() and path.stat().st_size > 10_000
    return path
