"""The one settings object, composed of one small section model per area.

Every deployable builds a `Settings` once at its edge (the CLI, the serving app), from
environment variables with the `STREAMREC_` prefix (nested sections use `__`, e.g.
`STREAMREC_KAFKA__BOOTSTRAP`), and passes it down to constructors; modules never read
`os.environ` themselves. The object is frozen. A `STREAMREC_` variable that names no field
stops start-up with the closest valid name (`SettingsError`), and `with_overrides` validates
like the environment does. Secrets (`SecretStr`) are masked in `repr`, in `printable` (what
the CLI and worker logs show) and in error messages; only the code that connects calls
`get_secret_value()`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError

from streamrec.infra.errors import SettingsError
from streamrec.infra.settings.analytics import AnalyticsSettings, ClickHouseSettings
from streamrec.infra.settings.auth import AuthSettings
from streamrec.infra.settings.base import MASK, Section, redact_url, shown
from streamrec.infra.settings.candidates import CandidateSettings
from streamrec.infra.settings.environment import (
    DELIMITER,
    PREFIX,
    check_environment,
    check_keys,
    env_name,
    invalid,
)
from streamrec.infra.settings.faults import FaultSettings
from streamrec.infra.settings.features import FeatureSettings
from streamrec.infra.settings.invalidation import InvalidationSettings
from streamrec.infra.settings.kafka import KafkaSettings, ReplaySettings
from streamrec.infra.settings.llm import LLMSettings
from streamrec.infra.settings.models import EmbeddingSettings, ModelSettings
from streamrec.infra.settings.redis import RedisSettings
from streamrec.infra.settings.rollout import RolloutSettings
from streamrec.infra.settings.serving import ServingSettings
from streamrec.infra.settings.stack import DataSettings, StackSettings
from streamrec.infra.settings.trainer import TrainerSettings
from streamrec.infra.settings.vectors import IndexSettings

__all__ = [
    "MASK",
    "AnalyticsSettings",
    "AuthSettings",
    "CandidateSettings",
    "ClickHouseSettings",
    "DataSettings",
    "EmbeddingSettings",
    "FaultSettings",
    "FeatureSettings",
    "IndexSettings",
    "InvalidationSettings",
    "KafkaSettings",
    "LLMSettings",
    "ModelSettings",
    "RedisSettings",
    "ReplaySettings",
    "RolloutSettings",
    "Section",
    "ServingSettings",
    "Settings",
    "SettingsError",
    "StackSettings",
    "TrainerSettings",
    "redact_url",
]

# Sections whose fields reach a child's environment only when set (see faults.py).
_ONLY_WHEN_SET = frozenset({"faults"})


class Settings(BaseSettings):
    """All of StreamRec's configuration, by section."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX,
        env_nested_delimiter=DELIMITER,
        frozen=True,
        extra="forbid",
    )

    stack: StackSettings = StackSettings()
    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    clickhouse: ClickHouseSettings = ClickHouseSettings()
    replay: ReplaySettings = ReplaySettings()
    data: DataSettings = DataSettings()
    embedding: EmbeddingSettings = EmbeddingSettings()
    index: IndexSettings = IndexSettings()
    features: FeatureSettings = FeatureSettings()
    models: ModelSettings = ModelSettings()
    trainer: TrainerSettings = TrainerSettings()
    rollout: RolloutSettings = RolloutSettings()
    candidates: CandidateSettings = CandidateSettings()
    serving: ServingSettings = ServingSettings()
    auth: AuthSettings = AuthSettings()
    analytics: AnalyticsSettings = AnalyticsSettings()
    invalidation: InvalidationSettings = InvalidationSettings()
    llm: LLMSettings = LLMSettings()
    faults: FaultSettings = FaultSettings()

    def __init__(self, **values: Any) -> None:
        # pydantic-settings drops variables that match no field: check them first.
        check_environment(type(self), os.environ)
        try:
            super().__init__(**values)
        except ValidationError as exc:
            if values:  # the caller's own arguments: pydantic's error is the clearest
                raise
            error = invalid(exc, from_environment=True)
        except PydanticSettingsError as exc:  # a value the environment source cannot parse
            error = SettingsError(f"invalid settings: {exc}")
        else:
            return
        # Raised outside the handler, so that the error has no context at all: pydantic's
        # error (suppressed, but still reachable for a log handler or an error tracker) holds
        # the variable's value, which may be a secret.
        raise error

    @property
    def state_dir(self) -> Path:
        return self.stack.state_dir.resolve()

    @property
    def kafka_bootstrap(self) -> str:
        """`kafka.bootstrap`, or every node of the local stack (a client then starts while
        any one of them is down)."""
        if self.kafka.bootstrap:
            return self.kafka.bootstrap
        ports = self.stack.kafka_node_ports()
        return ",".join(
            f"{self.stack.kafka_node_host(i)}:{port}" for i, (port, _) in enumerate(ports, 1)
        )

    @property
    def replication_factor(self) -> int:
        """Copies of each partition of the topics a worker declares itself (Faust's
        changelogs). `topics apply` counts the cluster's brokers instead (`streams/admin.py`)."""
        return self.kafka.replication_factor or min(3, self.stack.kafka_brokers)

    def min_insync_replicas(self, replication_factor: int, durable: bool = True) -> int:
        """The ISR size an acks=all write needs: a durable topic's write is then on two
        brokers of three before it is acknowledged; a transient one's goes on while one copy
        is left."""
        if not durable:
            return 1
        rf = replication_factor
        return max(1, min(self.kafka.min_insync_replicas or rf - 1, rf))

    @property
    def tls_dir(self) -> Path:
        """Where `streamrec up` keeps the CA and the servers' certificates it generates."""
        return self.state_dir / "tls"

    @property
    def kafka_ca_file(self) -> str:
        return self.kafka.ca_file or str(self.tls_dir / "ca.pem")

    def kafka_config(self) -> dict[str, str]:
        """librdkafka's connection settings (bootstrap and security). It carries the
        password: hand it to a client only."""
        k = self.kafka
        # librdkafka's default (60 s) keeps a request to an unreachable broker pending, and
        # what waits on it stalled, for a minute before it asks another broker.
        config = {
            "bootstrap.servers": self.kafka_bootstrap,
            "socket.timeout.ms": str(int(k.request_timeout_s * 1000)),
        }
        if k.security_protocol == "SASL_SSL":
            config |= {
                "security.protocol": "SASL_SSL",
                "sasl.mechanism": k.sasl_mechanism,
                "sasl.username": k.username,
                "sasl.password": k.password.get_secret_value(),
                "ssl.ca.location": self.kafka_ca_file,
            }
        return config

    @property
    def redis_ca_file(self) -> str:
        return self.redis.ca_file or str(self.tls_dir / "ca.pem")

    @property
    def redis_url(self) -> str:
        """The URL to connect with. It carries the password: hand it to a client only, and
        print `redact_url(settings.redis_url)`."""
        return self.redis.url.get_secret_value() or self.local_redis_url

    @property
    def redis_sentinels(self) -> list[tuple[str, int]]:
        """(host, port) of the Sentinels clients ask for the primary; empty: connect to
        `redis_url` directly. The local stack's when it runs them and no URL is given."""
        if self.redis.sentinels:
            return [
                (host.strip("[]"), int(port))  # [::1]:26379, as in a URL
                for host, _, port in (a.rpartition(":") for a in self.redis.sentinels)
            ]
        if self.stack.redis_sentinel and not self.redis.url.get_secret_value():
            return [(self.stack.host, port) for port in self.stack.redis_sentinel_ports]
        return []

    @property
    def local_redis_url(self) -> str:
        """The local stack's redis-server, with the user, password and TLS of the settings."""
        r = self.redis
        auth = ""
        if r.password.get_secret_value():
            auth = f"{quote(r.username, safe='')}:{quote(r.password.get_secret_value(), safe='')}@"
        scheme, query = "redis", ""
        if r.tls:
            scheme, query = "rediss", f"?ssl_ca_certs={quote(self.redis_ca_file)}"
        return f"{scheme}://{auth}{self.stack.host}:{self.stack.redis_port}/0{query}"

    @property
    def clickhouse_dsn(self) -> str:
        """The DSN to connect with. It carries the password: hand it to a client only, and
        print `redact_url(settings.clickhouse_dsn)`."""
        return self.clickhouse.dsn.get_secret_value() or f"chdb://{self.state_dir / 'clickhouse'}"

    def to_env(self) -> dict[str, str]:
        """The environment that rebuilds this object in a child process (workers, servers)."""
        env = {}
        for section in type(self).model_fields:
            values = getattr(self, section).model_dump(exclude_defaults=section in _ONLY_WHEN_SET)
            for field, value in values.items():
                if isinstance(value, SecretStr):
                    value = value.get_secret_value()
                # pydantic-settings reads a list, set or mapping from the environment as JSON.
                if isinstance(value, set | frozenset):
                    value = sorted(value)
                text = json.dumps(value) if isinstance(value, list | tuple | dict) else value
                env[env_name(section, field)] = str(text)
        return env

    def printable(self, changed_only: bool = False) -> dict[str, str]:
        """Each setting by its variable name, as logs and the CLI show it: secrets masked
        (a DSN keeps its scheme, host and port); `changed_only`: those not at their default."""
        out = {}
        for section in type(self).model_fields:
            model = getattr(self, section)
            for field, info in type(model).model_fields.items():
                value = getattr(model, field)
                if changed_only and value == info.get_default(call_default_factory=True):
                    continue
                out[env_name(section, field)] = shown(value)
        return out

    def with_overrides(self, **sections: Mapping[str, object] | BaseModel) -> Settings:
        """A copy with some fields of some sections replaced (tests and the CLI use it),
        validated as the environment is: unknown names and wrong values are `SettingsError`s."""
        updates = {
            name: fields.model_dump() if isinstance(fields, BaseModel) else dict(fields)
            for name, fields in sections.items()
        }
        check_keys(type(self), updates)
        data = {
            name: {**getattr(self, name).model_dump(), **updates.get(name, {})}
            for name in type(self).model_fields
        }
        try:
            # model_validate runs the validators without __init__: no environment is read.
            return type(self).model_validate(data)
        except ValidationError as exc:
            error = invalid(exc, from_environment=False)
        raise error  # without the context that holds the value (see __init__)
