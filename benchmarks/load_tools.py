"""The HTTP load generator a benchmark uses, installed on first use.

vegeta (open loop: requests go out at the set rate whatever the server does, so queueing
shows in the latencies) is built with `go install` from the Go module proxy into
`$(go env GOPATH)/bin`. Where Go is missing or the build fails, Debian's `hey` is installed
with apt-get; hey is closed loop per worker (`-q` per worker), so it understates latency at
overload. `ensure_load_tool()` returns which one it found and says so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

VEGETA_MODULE = "github.com/tsenart/vegeta/v12@v12.13.0"


@dataclass(frozen=True)
class LoadTool:
    name: str  # "vegeta" or "hey"
    path: str


def _go() -> str | None:
    """Go on PATH, or where its official tarball installs it."""
    return shutil.which("go") or next(
        (p for p in ("/usr/local/go/bin/go",) if Path(p).exists()), None
    )


def _go_bin() -> Path | None:
    go = shutil.which("go") or (
        "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None
    )
    if go is None:
        return None
    gopath = subprocess.run([go, "env", "GOPATH"], capture_output=True, text=True, check=False)
    return Path(gopath.stdout.strip() or Path.home() / "go") / "bin"


def _vegeta() -> str | None:
    found = shutil.which("vegeta")
    if found:
        return found
    bin_dir = _go_bin()
    if bin_dir is None:
        return None
    path = bin_dir / "vegeta"
    if not path.exists():
        print(f"load tool: building vegeta ({VEGETA_MODULE}) with go install...", flush=True)
        go = _go() or "go"
        done = subprocess.run([go, "install", VEGETA_MODULE], capture_output=True, text=True)
        if done.returncode != 0:
            print(f"load tool: go install failed: {done.stderr.strip()[-400:]}", flush=True)
            return None
    return str(path) if path.exists() else None


def _hey() -> str | None:
    found = shutil.which("hey")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    print("load tool: installing Debian's hey with apt-get...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-qq", "hey"], env=env, capture_output=True)
    return shutil.which("hey")


def ensure_load_tool() -> LoadTool:
    """vegeta, else hey; a clear error naming both ways to get one when neither works."""
    path = _vegeta()
    if path:
        tool = LoadTool("vegeta", path)
    else:
        path = _hey()
        if not path:
            raise SystemExit(
                "no HTTP load generator: install Go (then `go install "
                f"{VEGETA_MODULE}`) or Debian's hey (`apt-get install hey`)"
            )
        tool = LoadTool("hey", path)
    print(f"load tool: {tool.name} ({tool.path})", flush=True)
    return tool
