"""Finding the system programs the local stack needs, with install hints when missing."""

from __future__ import annotations

import re
import shutil
import subprocess

from streamrec.infra.errors import MissingProgramError

INSTALL_HINTS = {
    "java": "Java 17 or newer: apt-get install -y openjdk-17-jre-headless",
    "mvn": "Maven: apt-get install -y maven",
    "redis-server": "Redis: apt-get install -y redis-server",
}


def require(program: str, hint_key: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise MissingProgramError(
            f"'{program}' not found on PATH. Install {INSTALL_HINTS[hint_key]}"
        )
    return path


def require_java(java: str, minimum: int = 17) -> str:
    path = require(java, "java")
    out = subprocess.run([path, "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):  # "1.8" style
        major = int(match.group(2))
    if major < minimum:
        raise MissingProgramError(
            f"Kafka needs Java {minimum}+, found {out.splitlines()[0] if out else 'unknown'}. "
            f"Install {INSTALL_HINTS['java']}"
        )
    return path


def missing_programs(java: str, mvn: str, redis_server: str) -> list[str]:
    """Every missing program with its install hint (the Makefile's preflight prints these)."""
    problems = []
    for check in (
        lambda: require_java(java),
        lambda: require(mvn, "mvn"),
        lambda: require(redis_server, "redis-server"),
    ):
        try:
            check()
        except MissingProgramError as exc:
            problems.append(str(exc))
    return problems
