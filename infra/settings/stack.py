"""The local stack: where it keeps data and logs, its ports and the programs it runs."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from streamrec.infra.settings.base import Section


class StackSettings(Section):
    """Where the local stack keeps its data and logs, and the ports it listens on."""

    state_dir: Path = Field(Path(".streamrec"), description="data, logs and pid files")
    host: str = "127.0.0.1"
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    kafka_heap: str = "768m"
    redis_port: int = 16379
    start_timeout_s: float = 60.0
    mvn: str = "mvn"
    java: str = "java"
    redis_server: str = "redis-server"


class DataSettings(Section):
    """Where fetched datasets are cached (outside the repo; MovieLens is never committed)."""

    cache_dir: Path = Field(Path.home() / ".cache" / "streamrec", description="dataset cache")
    recbole_version: str = "1.2.1"
