"""The local stack as one unit: `streamrec up | down | status`.

`up` is idempotent (parts already running are left alone), waits until each part answers,
and raises a `StackError` naming what is missing or taken. `down` stops what `up` started,
by pid, and keeps the data unless `purge`.

Kafka is one node unless `stack.kafka_brokers` asks for more. A state dir that holds a
cluster remembers its nodes' ports (`kafka-cluster/nodes.json`), so `down`, `status` and a
later `up` without the setting handle every node of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from dataclasses import dataclass

from streamrec.infra import clickhouse, netns, processes
from streamrec.infra.errors import StackError
from streamrec.infra.kafka_broker import KafkaBroker, cluster_dir
from streamrec.infra.redis_server import RedisSentinel, RedisServer, sentinel_parts
from streamrec.infra.settings import Settings, redact_url


@dataclass(frozen=True)
class PartStatus:
    name: str
    address: str
    running: bool
    answers: bool
    detail: str = ""


def kafka_layout(settings: Settings) -> list[tuple[int, int]]:
    """(client port, controller port) of each Kafka node of this stack: the settings', or
    those of the cluster its state dir holds when the settings name no size."""
    asked = settings.stack.kafka_node_ports()
    record = cluster_dir(settings) / "nodes.json"
    if not record.exists():
        return asked
    recorded = [(int(p), int(c)) for p, c in json.loads(record.read_text())["ports"]]
    if len(asked) == 1:
        return recorded
    if len(asked) != len(recorded):
        raise StackError(
            f"{settings.state_dir} holds a {len(recorded)}-node Kafka cluster, not "
            f"{len(asked)}: use another STREAMREC_STACK__STATE_DIR, or `streamrec down "
            "--purge` first"
        )
    return asked


class StackManager:
    """Owns the lifecycle of the local Kafka node(s) and redis-server, and checks ClickHouse."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        layout = kafka_layout(settings)
        self.kafka_nodes = [
            KafkaBroker(settings, i, ports=layout) for i in range(1, len(layout) + 1)
        ]
        self.kafka = self.kafka_nodes[0]
        self.redis = RedisServer(settings)
        self.redis_side = sentinel_parts(settings)

    def up(self) -> dict[str, bool]:
        """Start every part not already running; returns which ones this call started."""
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        started = {"redis": self.redis.start()}
        # The replica first: the Sentinels learn of it from the primary they monitor.
        started |= {part.name: part.start() for part in self.redis_side}
        return started | self._start_kafka()

    def _redis_side_to_stop(self) -> list[RedisServer | RedisSentinel]:
        """The replica and Sentinels of this state dir, also when the settings of a later
        `down` no longer ask for them (only their pid files are needed to stop them)."""
        if self.redis_side or not (self.settings.state_dir / "redis-replica").exists():
            return self.redis_side
        return sentinel_parts(self.settings.with_overrides(stack={"redis_sentinel": True}))

    def _start_kafka(self) -> dict[str, bool]:
        if self.settings.stack.kafka_netns:
            netns.ensure(self.settings, len(self.kafka_nodes))
        if not self.kafka.clustered:
            return {"kafka": self.kafka.start()}
        stopped = [n for n in self.kafka_nodes if n.pid() is None]
        if not self.settings.stack.kafka_netns:
            # Every port first: a node that cannot start would leave the others without a
            # quorum. (Nodes in namespaces of their own have their ports to themselves.)
            processes.ensure_ports_free(
                self.settings.stack.host,
                {
                    f"Kafka node {n.node_id}{what}": port
                    for n in stopped
                    for what, port in (("", n.port), (" controller", n.controller_port))
                },
                processes.CLUSTER_PORT_VARIABLES,
            )
        record = cluster_dir(self.settings) / "nodes.json"
        record.parent.mkdir(parents=True, exist_ok=True)
        ports = [[n.port, n.controller_port] for n in self.kafka_nodes]
        record.write_text(json.dumps({"ports": ports}) + "\n")
        for node in stopped:
            node.launch()
        for node in stopped:
            node.wait_ready()
        return {n.name: n in stopped for n in self.kafka_nodes}

    def down(self, purge: bool = False) -> dict[str, bool]:
        side = {part.name: part.stop() for part in reversed(self._redis_side_to_stop())}
        stopped = self._stop_kafka() | side | {"redis": self.redis.stop()}
        if purge:
            shutil.rmtree(self.settings.state_dir, ignore_errors=True)
        return stopped

    def _stop_kafka(self) -> dict[str, bool]:
        running = {n.name: n.pid() for n in self.kafka_nodes}
        # All at once: stopped one after another, the last nodes would each wait for a
        # controller quorum that is already gone before their controlled shutdown gives up.
        for pid in running.values():
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGTERM)
        for node in self.kafka_nodes:
            pid = running[node.name]
            if pid is not None:
                processes.stop(pid, node.pid_file, timeout_s=30)
            node.pid_file.unlink(missing_ok=True)
        # Also when the settings of this `down` no longer ask for namespaces.
        netns.remove(self.settings)
        return {name: pid is not None for name, pid in running.items()}

    def status(self) -> list[PartStatus]:
        redis_pid = self.redis.pid()
        dsn = self.settings.clickhouse_dsn
        ch_ok, ch_detail = clickhouse.ping(dsn, **clickhouse.credentials(self.settings))
        return [
            *(self._kafka_status(node) for node in self.kafka_nodes),
            PartStatus(
                "redis",
                self.redis.address,
                redis_pid is not None,
                self.redis.ping(),
                f"pid {redis_pid}, log {self.redis.log_file}" if redis_pid else "",
            ),
            *(self._redis_side_status(part) for part in self.redis_side),
            PartStatus("clickhouse", redact_url(dsn), ch_ok, ch_ok, ch_detail),
        ]

    @staticmethod
    def _redis_side_status(part: RedisServer | RedisSentinel) -> PartStatus:
        pid = part.pid()
        detail = f"pid {pid}, log {part.log_file}" if pid else ""
        return PartStatus(part.name, part.address, pid is not None, part.ping(), detail)

    def _kafka_status(self, node: KafkaBroker) -> PartStatus:
        pid = node.pid()
        detail = f"pid {pid}, log {node.log_file}" if pid else ""
        if self.settings.stack.kafka_netns and netns.is_cut(self.settings, node.node_id):
            detail += f"; cut off the network (streamrec partition heal {node.node_id})"
        return PartStatus(node.name, node.address, pid is not None, node.ping(), detail)
