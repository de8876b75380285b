"""The local stack as one unit: `streamrec up | down | status`.

`up` is idempotent (parts already running are left alone), waits until each part answers,
and raises a `StackError` naming what is missing or taken. `down` stops what `up` started,
by pid, and keeps the data unless `purge`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from streamrec.infra import clickhouse
from streamrec.infra.kafka_broker import KafkaBroker
from streamrec.infra.redis_server import RedisServer
from streamrec.infra.settings import Settings, redact_url


@dataclass(frozen=True)
class PartStatus:
    name: str
    address: str
    running: bool
    answers: bool
    detail: str = ""


class StackManager:
    """Owns the lifecycle of the local Kafka broker and redis-server, and checks ClickHouse."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.kafka = KafkaBroker(settings)
        self.redis = RedisServer(settings)

    def up(self) -> dict[str, bool]:
        """Start every part not already running; returns which ones this call started."""
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        started = {"redis": self.redis.start()}
        started["kafka"] = self.kafka.start()
        return started

    def down(self, purge: bool = False) -> dict[str, bool]:
        stopped = {"kafka": self.kafka.stop(), "redis": self.redis.stop()}
        if purge:
            shutil.rmtree(self.settings.state_dir, ignore_errors=True)
        return stopped

    def status(self) -> list[PartStatus]:
        kafka_pid, redis_pid = self.kafka.pid(), self.redis.pid()
        dsn = self.settings.clickhouse_dsn
        ch_ok, ch_detail = clickhouse.ping(dsn, **clickhouse.credentials(self.settings))
        return [
            PartStatus(
                "kafka",
                self.kafka.address,
                kafka_pid is not None,
                self.kafka.ping(),
                f"pid {kafka_pid}, log {self.kafka.log_file}" if kafka_pid else "",
            ),
            PartStatus(
                "redis",
                self.redis.address,
                redis_pid is not None,
                self.redis.ping(),
                f"pid {redis_pid}, log {self.redis.log_file}" if redis_pid else "",
            ),
            PartStatus("clickhouse", redact_url(dsn), ch_ok, ch_ok, ch_detail),
        ]
