"""Creating and describing the contract topics through confluent-kafka's AdminClient."""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)

from streamrec.infra.settings import Settings
from streamrec.streams.login import LoginWatch
from streamrec.topics import ALL_TOPICS, TopicSpec
from streamrec.topics.errors import TopicError


@dataclass(frozen=True)
class TopicState:
    name: str
    partitions: int
    cleanup_policy: str
    retention_ms: str
    end_offsets: int


@dataclass(frozen=True)
class ApplyResult:
    created: list[str]
    altered: list[str]
    unchanged: list[str]


class TopicManager:
    """Applies `topics/` to a cluster (create, grow partitions, align configs) and describes it."""

    def __init__(self, settings: Settings, specs: tuple[TopicSpec, ...] = ALL_TOPICS) -> None:
        self.settings = settings
        self.specs = specs
        self.login = LoginWatch()
        self.admin = AdminClient({**settings.kafka_config(), "error_cb": self.login})

    def partitions_of(self, spec: TopicSpec) -> int:
        return spec.partitions or self.settings.kafka.default_partitions

    def apply(self, timeout_s: float = 30.0) -> ApplyResult:
        """Idempotent: creates missing topics, adds partitions, and sets drifted configs."""
        existing = self._metadata(timeout_s).topics
        created, altered, unchanged = [], [], []
        new = [
            NewTopic(
                s.name,
                num_partitions=self.partitions_of(s),
                replication_factor=self.settings.kafka.replication_factor,
                config=s.config(),
            )
            for s in self.specs
            if s.name not in existing
        ]
        if new:
            self._wait(self.admin.create_topics(new, request_timeout=timeout_s), "create")
            created = [t.topic for t in new]
            self._wait_for_leaders(created, timeout_s)
        current = self.describe_configs([s for s in self.specs if s.name in existing], timeout_s)
        for spec in self.specs:
            if spec.name not in existing:
                continue
            changed = False
            have = len(existing[spec.name].partitions)
            want = self.partitions_of(spec)
            if have < want:  # Kafka cannot shrink a topic; growing re-keys, so say so in the log
                self._wait(self.admin.create_partitions([NewPartitions(spec.name, want)]), "grow")
                changed = True
            drift = {k: v for k, v in spec.config().items() if current[spec.name].get(k) != v}
            if drift:
                resource = ConfigResource(
                    ConfigResource.Type.TOPIC,
                    spec.name,
                    incremental_configs=[
                        ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                        for k, v in drift.items()
                    ],
                )
                self._wait(self.admin.incremental_alter_configs([resource]), "alter")
                changed = True
            (altered if changed else unchanged).append(spec.name)
        return ApplyResult(created, altered, unchanged)

    def describe_configs(
        self, specs: list[TopicSpec], timeout_s: float = 30.0
    ) -> dict[str, dict[str, str]]:
        if not specs:
            return {}
        resources = [ConfigResource(ConfigResource.Type.TOPIC, s.name) for s in specs]
        futures = self.admin.describe_configs(resources, request_timeout=timeout_s)
        out = {}
        for res, fut in futures.items():
            try:
                out[res.name] = {k: v.value for k, v in fut.result().items()}
            except KafkaException as exc:
                raise TopicError(f"describing {res.name} failed: {exc}") from None
        return out

    def list(self, timeout_s: float = 15.0) -> list[TopicState]:
        """Each contract topic as the cluster has it, with its partitions' end offsets summed."""
        md = self._metadata(timeout_s).topics
        present = [s for s in self.specs if s.name in md]
        configs = self.describe_configs(present, timeout_s)
        consumer = Consumer(
            {
                **self.settings.kafka_config(),
                "group.id": "streamrec-topics-list",
                "enable.auto.commit": False,
            }
        )
        try:
            states = []
            for spec in self.specs:
                if spec.name not in md:
                    states.append(TopicState(spec.name, 0, "(missing)", "", 0))
                    continue
                ends = 0
                for p in md[spec.name].partitions:
                    _low, high = consumer.get_watermark_offsets(
                        TopicPartition(spec.name, p), timeout=timeout_s
                    )
                    ends += high
                cfg = configs[spec.name]
                states.append(
                    TopicState(
                        spec.name,
                        len(md[spec.name].partitions),
                        cfg.get("cleanup.policy", ""),
                        cfg.get("retention.ms", ""),
                        ends,
                    )
                )
            return states
        finally:
            consumer.close()

    def _metadata(self, timeout_s: float):
        try:
            return self.admin.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            refused = self.login.explain(self.admin, self.settings.kafka.username)
            if refused is not None:
                raise TopicError(f"Kafka at {self.settings.kafka_bootstrap}: {refused}") from None
            raise TopicError(
                f"cannot reach Kafka at {self.settings.kafka_bootstrap} ({exc}); "
                "is the stack up? (streamrec up)"
            ) from None

    def _wait_for_leaders(self, names: list[str], timeout_s: float) -> None:
        """Creation returns before every partition's leader serves requests; wait until each
        answers a ListOffsets (what producers and `list` need) or fail at the deadline."""
        deadline = time.monotonic() + timeout_s
        consumer = Consumer(
            {
                **self.settings.kafka_config(),
                "group.id": "streamrec-topics-apply",
            }
        )
        try:
            pending = {(n, p) for n in names for p in range(self.partitions_of(self._spec(n)))}
            while pending:
                for name, p in sorted(pending):
                    try:
                        consumer.get_watermark_offsets(TopicPartition(name, p), timeout=1.0)
                        pending.discard((name, p))
                    except KafkaException:
                        pass
                if pending and time.monotonic() > deadline:
                    raise TopicError(f"no leader within {timeout_s:.0f} s for {sorted(pending)}")
                if pending:
                    time.sleep(0.05)  # polling until the controller's election has propagated
        finally:
            consumer.close()

    def _spec(self, name: str) -> TopicSpec:
        return next(s for s in self.specs if s.name == name)

    @staticmethod
    def _wait(futures: dict, what: str) -> None:
        for name, fut in futures.items():
            try:
                fut.result()
            except KafkaException as exc:
                raise TopicError(f"{what} {name} failed: {exc}") from None
