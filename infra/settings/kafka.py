"""Kafka clients: the broker they talk to, how they authenticate, and the bulk producer."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, model_validator

from streamrec.infra.settings.base import Section


class KafkaSettings(Section):
    """Clients' view of the broker; `bootstrap` empty means the local stack's broker.

    `security_protocol` SASL_SSL makes every client (librdkafka, aiokafka, the CLI)
    authenticate with SCRAM over TLS, and makes `streamrec up` start the local broker with
    that listener (`up --secure` sets it). An empty `ca_file` means the CA that `up`
    generated in the state dir."""

    bootstrap: str = ""
    default_partitions: int = Field(6, ge=1)
    partitions: dict[str, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict,
        description="partitions by topic name, over the count in its TopicSpec, as JSON: "
        "'{\"events.interactions\": 12}'; `topics apply` grows a topic to it (never shrinks), "
        "and the Faust tables keyed from a topic take its count (ADR 0132)",
    )
    replication_factor: int = Field(
        0, ge=0, description="copies of each partition; 0: the local stack's nodes, at most 3"
    )
    min_insync_replicas: int = Field(
        0,
        ge=0,
        description="copies a durable topic's write needs before it is acknowledged (acks=all); "
        "0: one less than the replication factor, at least 1",
    )
    client_id: str = "streamrec"
    session_timeout_s: float = Field(
        10.0,
        ge=6.0,
        le=300.0,
        description="a consumer silent this long leaves its group (a kill -9's rebalance wait)",
    )
    request_timeout_s: float = Field(
        15.0,
        ge=1.0,
        le=300.0,
        description="how long a client waits for one broker's answer before it drops that "
        "connection and asks another: a broker cut off the network never answers (Faust's "
        "consumers: at least session_timeout_s + 5)",
    )
    member_slot: str = Field(
        "",
        max_length=100,
        description="this process's stable slot in its consumer groups (a pod ordinal, a "
        "systemd instance): set, consumers join as static members (group.instance.id "
        "GROUP:HOST:SLOT) and a restart gets its partitions back without a rebalance; unique "
        "per group and host",
    )
    security_protocol: Literal["PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256"] = "SCRAM-SHA-512"
    username: str = Field("streamrec", min_length=1, description="SASL user")
    password: SecretStr = Field(SecretStr(""), description="SASL password; a secret")
    ca_file: str = Field("", description="PEM CA bundle the broker's certificate chains to")

    @model_validator(mode="after")
    def _secured_needs_a_password(self) -> KafkaSettings:
        if self.security_protocol == "SASL_SSL" and not self.password.get_secret_value():
            raise ValueError("SASL_SSL needs a password: set STREAMREC_KAFKA__PASSWORD")
        return self


class ReplaySettings(Section):
    """Bulk producer tuning for backfills (throughput over latency)."""

    linger_ms: int = 20
    batch_size: int = 1_000_000
    compression: str = "lz4"
    queue_max_messages: int = 500_000
