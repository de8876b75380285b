"""The local stack: where it keeps data and logs, its ports and the programs it runs."""

from __future__ import annotations

from ipaddress import IPv4Network
from pathlib import Path

from pydantic import Field, model_validator

from streamrec.infra.settings.base import Section

# Nodes after the first listen `NODE_PORT_STEP` ports apart unless their ports are given.
NODE_PORT_STEP = 10


class StackSettings(Section):
    """Where the local stack keeps its data and logs, and the ports it listens on."""

    state_dir: Path = Field(Path(".streamrec"), description="data, logs and pid files")
    host: str = "127.0.0.1"
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    kafka_heap: str = "768m"
    kafka_brokers: int = Field(
        1, ge=1, le=9, description="Kafka nodes `up` starts (3: a replicated KRaft cluster)"
    )
    kafka_extra_ports: list[int] = Field(
        default_factory=list,
        description="client ports of nodes 2..N; empty: kafka_port + 10, + 20, ...",
    )
    kafka_extra_controller_ports: list[int] = Field(
        default_factory=list,
        description="controller ports of nodes 2..N; empty: kafka_controller_port + 10, ...",
    )
    # Three JVMs share two cores with everything else: each node of a cluster gets less.
    kafka_node_heap: str = Field("384m", description="heap of each node of a multi-node cluster")
    kafka_node_session_timeout_ms: int = Field(
        6000, ge=1000, description="how long a silent node stays a partition leader or in the ISR"
    )
    kafka_netns: bool = Field(
        False,
        description="each Kafka node runs in a network namespace of its own on a private "
        "bridge, so that `streamrec partition cut N` can cut one off (needs root and "
        "iproute2)",
    )
    kafka_netns_subnet: IPv4Network = Field(
        IPv4Network("10.231.0.0/24"),
        description="the bridge's network with kafka_netns: the bridge has its first "
        "address, node N the (1 + N)th",
    )
    redis_port: int = 16379
    redis_sentinel: bool = Field(
        False,
        description="`up` also starts a replica of redis-server and three Sentinels that "
        "promote it when the primary is lost; clients find the primary through them",
    )
    redis_replica_port: int = 16380
    redis_sentinel_ports: list[int] = Field(
        default_factory=lambda: [16381, 16382, 16383],
        description="one port per Sentinel; a majority of them agree on a failover",
    )
    redis_down_after_ms: int = Field(
        1000, ge=100, description="how long a silent primary is up before Sentinels fail over"
    )
    start_timeout_s: float = 60.0
    mvn: str = "mvn"
    java: str = "java"
    redis_server: str = "redis-server"

    @model_validator(mode="after")
    def _ports_per_extra_node(self) -> StackSettings:
        for name in ("kafka_extra_ports", "kafka_extra_controller_ports"):
            given = len(getattr(self, name))
            if given and given != self.kafka_brokers - 1:
                raise ValueError(f"{name} needs {self.kafka_brokers - 1} ports, not {given}")
        if self.kafka_netns and self.kafka_netns_subnet.num_addresses < self.kafka_brokers + 3:
            raise ValueError(
                f"kafka_netns_subnet {self.kafka_netns_subnet} has too few addresses for "
                f"{self.kafka_brokers} nodes and the bridge"
            )
        return self

    def kafka_node_host(self, node_id: int) -> str:
        """The address Kafka node `node_id` listens on: its namespace's with kafka_netns."""
        if not self.kafka_netns:
            return self.host
        return str(self.kafka_netns_subnet.network_address + 1 + node_id)

    def kafka_node_ports(self) -> list[tuple[int, int]]:
        """(client port, controller port) of each Kafka node, node 1 first."""
        extra = range(1, self.kafka_brokers)
        clients = self.kafka_extra_ports or [self.kafka_port + NODE_PORT_STEP * i for i in extra]
        controllers = self.kafka_extra_controller_ports or [
            self.kafka_controller_port + NODE_PORT_STEP * i for i in extra
        ]
        return [
            (self.kafka_port, self.kafka_controller_port),
            *zip(clients, controllers, strict=True),
        ]


class DataSettings(Section):
    """Where fetched datasets are cached (outside the repo; MovieLens is never committed)."""

    cache_dir: Path = Field(Path.home() / ".cache" / "streamrec", description="dataset cache")
    recbole_version: str = "1.2.1"
