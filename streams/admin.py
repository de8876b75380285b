"""Creating and describing the contract topics through confluent-kafka's AdminClient.

Replication follows the cluster: each topic gets `kafka.replication_factor` copies, or (0,
the default) as many as the cluster has brokers, at most 3, and a durable topic
(`TopicSpec.durable`) `min.insync.replicas` of one less, so an acks=all write is on two
brokers of three before it is acknowledged. A topic with fewer copies than that (made before
the cluster grew) is raised by a partition reassignment: librdkafka has no
AlterPartitionReassignments, so Kafka's own `kafka-reassign-partitions` tool does it, from
the jars `streamrec up` runs (ADR 0111).

Partition counts are the specs' unless `kafka.partitions` sets one (`streams.partitions`,
ADR 0132). A topic is grown to its count, never shrunk: Kafka cannot remove partitions, so a
count below the topic's is reported and the topic kept as it is.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)

from streamrec.infra.errors import StackError
from streamrec.infra.kafka_broker import KafkaBroker
from streamrec.infra.settings import Settings
from streamrec.streams.login import LoginWatch
from streamrec.streams.partitions import check_partitions
from streamrec.streams.partitions import partitions_of as effective_partitions
from streamrec.topics import ALL_TOPICS, TopicSpec
from streamrec.topics.errors import TopicError


@dataclass(frozen=True)
class TopicState:
    name: str
    partitions: int
    cleanup_policy: str
    retention_ms: str
    end_offsets: int
    replicas: int = 0  # the fewest copies of any of its partitions
    min_insync_replicas: str = ""


@dataclass(frozen=True)
class PartitionPlan:
    """What `apply` does to existing topics' partition counts."""

    grow: dict[str, tuple[int, int]]  # name -> (partitions now, configured)
    above: dict[str, tuple[int, int]]  # more than configured: Kafka cannot shrink, kept


def partition_plan(have: Mapping[str, int], want: Mapping[str, int]) -> PartitionPlan:
    """The grow-only plan from the existing topics' counts (`have`) to the configured ones."""
    grow = {n: (have[n], w) for n, w in want.items() if n in have and have[n] < w}
    above = {n: (have[n], w) for n, w in want.items() if n in have and have[n] > w}
    return PartitionPlan(grow, above)


@dataclass(frozen=True)
class ApplyResult:
    created: list[str]
    altered: list[str]
    unchanged: list[str]
    replication_factor: int = 1
    grown: dict[str, tuple[int, int]] = field(default_factory=dict)
    above: dict[str, tuple[int, int]] = field(default_factory=dict)


class TopicManager:
    """Applies `topics/` to a cluster (create, grow partitions, align configs) and describes it."""

    def __init__(self, settings: Settings, specs: tuple[TopicSpec, ...] = ALL_TOPICS) -> None:
        self.settings = settings
        self.specs = specs
        # A test's own specs are known topics too.
        check_partitions(settings, {s.name: s for s in (*ALL_TOPICS, *specs)}.values())
        self.login = LoginWatch()
        self.admin = AdminClient({**settings.kafka_config(), "error_cb": self.login})

    def partitions_of(self, spec: TopicSpec) -> int:
        return effective_partitions(self.settings, spec)

    def replication_factor(self, brokers: int) -> int:
        """The copies each topic should have on a cluster of `brokers` live brokers."""
        return self.settings.kafka.replication_factor or max(1, min(3, brokers))

    def config_of(self, spec: TopicSpec, replication_factor: int) -> dict[str, str]:
        """The spec's topic configs plus the ISR its writes need on this cluster."""
        in_sync = self.settings.min_insync_replicas(replication_factor, spec.durable)
        return spec.config() | {"min.insync.replicas": str(in_sync)}

    def apply(self, timeout_s: float = 30.0, reassign_timeout_s: float = 300.0) -> ApplyResult:
        """Idempotent: creates missing topics, adds partitions, raises replication, and sets
        drifted configs."""
        metadata = self._metadata(timeout_s)
        existing = metadata.topics
        rf = self.replication_factor(len(metadata.brokers))
        created, altered, unchanged = [], [], []
        new = [
            NewTopic(
                s.name,
                num_partitions=self.partitions_of(s),
                replication_factor=rf,
                config=self.config_of(s, rf),
            )
            for s in self.specs
            if s.name not in existing
        ]
        if new:
            self._wait(self.admin.create_topics(new, request_timeout=timeout_s), "create")
            created = [t.topic for t in new]
            self._wait_for_leaders(created, timeout_s)
        present = [s for s in self.specs if s.name in existing]
        raised = self._raise_replication(
            {s.name: existing[s.name] for s in present}, sorted(metadata.brokers), rf
        )
        if raised:
            self._await_replication(raised, rf, reassign_timeout_s)
        current = self.describe_configs(present, timeout_s)
        plan = partition_plan(
            {s.name: len(existing[s.name].partitions) for s in present},
            {s.name: self.partitions_of(s) for s in present},
        )
        for spec in self.specs:
            if spec.name not in existing:
                continue
            changed = spec.name in raised
            if spec.name in plan.grow:  # growing re-keys: the CLI says so
                want = plan.grow[spec.name][1]
                self._wait(self.admin.create_partitions([NewPartitions(spec.name, want)]), "grow")
                changed = True
            want_config = self.config_of(spec, rf)
            drift = {k: v for k, v in want_config.items() if current[spec.name].get(k) != v}
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
        return ApplyResult(created, altered, unchanged, rf, plan.grow, plan.above)

    def _raise_replication(self, topics: dict, brokers: list[int], rf: int) -> list[str]:
        """Reassign every partition with fewer than `rf` copies to `rf` brokers (its current
        replicas first, so the leader stays; then the least loaded others); the topics
        raised. Kafka copies the data in the background: `_await_replication` waits."""
        load = {b: 0 for b in brokers}
        for md in topics.values():
            for part in md.partitions.values():
                for b in part.replicas:
                    load[b] = load.get(b, 0) + 1
        plan = []
        for name, md in topics.items():
            for pid, part in sorted(md.partitions.items()):
                replicas = list(part.replicas)
                if len(replicas) >= rf:
                    continue
                others = sorted(
                    (b for b in brokers if b not in replicas),
                    key=lambda b: (load[b], (b - pid) % len(brokers)),
                )
                for b in others[: rf - len(replicas)]:
                    replicas.append(b)
                    load[b] += 1
                plan.append({"topic": name, "partition": pid, "replicas": replicas})
        if not plan:
            return []
        self._reassign(plan)
        return sorted({p["topic"] for p in plan})

    def _reassign(self, plan: list[dict]) -> None:
        tool = KafkaBroker(self.settings)
        with tempfile.TemporaryDirectory(prefix="streamrec-reassign-") as tmp:
            plan_file = Path(tmp) / "plan.json"
            plan_file.write_text(json.dumps({"version": 1, "partitions": plan}))
            args = [
                "--bootstrap-server",
                self.settings.kafka_bootstrap,
                "--reassignment-json-file",
                str(plan_file),
                "--execute",
            ]
            client = self._tool_client_config()
            if client:
                # 0600: it holds the SASL password.
                path = Path(tmp) / "client.properties"
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write("".join(f"{k}={v}\n" for k, v in client.items()))
                args += ["--command-config", str(path)]
            try:
                tool.tool("org.apache.kafka.tools.reassign.ReassignPartitionsCommand", *args)
            except StackError as exc:
                topics = sorted({p["topic"] for p in plan})
                raise TopicError(f"raising the replication of {topics} failed: {exc}") from None

    def _tool_client_config(self) -> dict[str, str]:
        """The Java client's view of `kafka_config()` (only what differs from PLAINTEXT)."""
        k = self.settings.kafka
        if k.security_protocol != "SASL_SSL":
            return {}
        password = k.password.get_secret_value()
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": k.sasl_mechanism,
            "sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule "
            f'required username="{k.username}" password="{password}";',
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": self.settings.kafka_ca_file,
        }

    def _await_replication(self, names: list[str], rf: int, timeout_s: float) -> None:
        """Until every partition of `names` has `rf` replicas, all in sync, or TopicError."""
        deadline = time.monotonic() + timeout_s
        while True:
            md = self._metadata(min(10.0, timeout_s)).topics
            short = [
                f"{n}[{pid}]"
                for n in names
                for pid, part in md[n].partitions.items()
                if len(part.replicas) < rf or len(part.isrs) < rf
            ]
            if not short:
                return
            if time.monotonic() > deadline:
                raise TopicError(
                    f"replication of {short[:6]} not complete within {timeout_s:.0f} s; Kafka "
                    "goes on copying: run `streamrec topics apply` again later"
                )
            time.sleep(0.2)  # polling the reassignment's progress, bounded by the deadline

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
                parts = md[spec.name].partitions.values()
                states.append(
                    TopicState(
                        spec.name,
                        len(parts),
                        cfg.get("cleanup.policy", ""),
                        cfg.get("retention.ms", ""),
                        ends,
                        min((len(p.replicas) for p in parts), default=0),
                        cfg.get("min.insync.replicas", ""),
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
