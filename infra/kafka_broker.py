"""Apache Kafka nodes in KRaft mode, from Maven Central jars: one node, or a cluster of N.

Responsibilities:
- resolve the broker's classpath from `infra/kafka/pom.xml` (Maven caches the jars in ~/.m2;
  the classpath is cached in the state dir, keyed by the pom's content);
- write `server.properties` and a log4j2 config, format the storage once with a cluster id;
- start `kafka.Kafka` under Java, wait until it answers a metadata request, stop it by pid.

A single node (the default) keeps its files in `<state dir>/kafka` and formats a dynamic
quorum of itself (`--standalone`). Each node of an N-node cluster (`stack.kafka_brokers`) is
broker and controller at once, with its own process, ports, heap and files under
`<state dir>/kafka-cluster/node-<id>`; the N controllers form a static quorum
(`controller.quorum.voters`) and share one cluster id. Internal topics get 3 copies and
`min.insync.replicas` 2 there, so one node may die without losing an acknowledged write.

The version choice is recorded in docs/adr/0001-kafka-version.md, the cluster in ADR 0110.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import subprocess
from pathlib import Path

from confluent_kafka.admin import AdminClient

from streamrec.infra import netns, processes, programs, tls
from streamrec.infra.errors import StackError
from streamrec.infra.settings import MASK, Settings

POM = Path(__file__).parent / "kafka" / "pom.xml"
LOG4J_TEMPLATE = Path(__file__).parent / "kafka" / "log4j2.yaml"
PROCESS_MARKER = "kafka.Kafka"

# Keeps librdkafka's connection-refused chatter out of the CLI while probing.
_SILENT = logging.getLogger("streamrec.kafka.probe")
_SILENT.setLevel(logging.CRITICAL + 1)
_SILENT.propagate = False


def cluster_dir(settings: Settings) -> Path:
    """Where the nodes of a multi-node cluster keep their files (and their cluster id)."""
    return settings.state_dir / "kafka-cluster"


class KafkaBroker:
    """Owns one local Kafka node's files and process (node 1 of 1 unless told otherwise)."""

    def __init__(
        self, settings: Settings, node_id: int = 1, ports: list[tuple[int, int]] | None = None
    ) -> None:
        self.settings = settings
        self.stack = settings.stack
        # (client, controller) port of every node of the cluster, node 1 first.
        self.ports = ports or self.stack.kafka_node_ports()
        self.nodes = len(self.ports)
        if not 1 <= node_id <= self.nodes:
            raise ValueError(f"node {node_id} of a {self.nodes}-node cluster")
        self.node_id = node_id
        self.log_dir = settings.state_dir / "logs"
        if self.clustered:
            self.name = f"kafka-{node_id}"
            self.home = cluster_dir(settings) / f"node-{node_id}"
        else:
            self.name = "kafka"
            self.home = settings.state_dir / "kafka"
        self.data_dir = self.home / "data"
        self.pid_file = self.home / "kafka.pid"
        self.log_file = self.log_dir / f"{self.name}.log"
        self.stdout_file = self.log_dir / f"{self.name}.out"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def clustered(self) -> bool:
        return self.nodes > 1

    @property
    def port(self) -> int:
        return self.ports[self.node_id - 1][0]

    @property
    def controller_port(self) -> int:
        return self.ports[self.node_id - 1][1]

    @property
    def host(self) -> str:
        """Where this node listens: the stack's host, or its own namespace's address."""
        return self.stack.kafka_node_host(self.node_id)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def pid(self) -> int | None:
        return processes.read_pid(self.pid_file, PROCESS_MARKER)

    def classpath(self) -> str:
        """The broker's runtime classpath, resolved by Maven once per pom version."""
        digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:16]
        # One file for every node: the single node's folder, which `up` makes in any case.
        cp_file = self.settings.state_dir / "kafka" / f"classpath-{digest}.txt"
        if not cp_file.exists():
            mvn = programs.require(self.stack.mvn, "mvn")
            cp_file.parent.mkdir(parents=True, exist_ok=True)
            result = subprocess.run(
                [
                    mvn,
                    "-q",
                    "-B",
                    "-f",
                    str(POM),
                    "dependency:build-classpath",
                    f"-Dmdep.outputFile={cp_file}",
                    "-Dmdep.includeScope=runtime",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0 or not cp_file.exists():
                cp_file.unlink(missing_ok=True)
                raise StackError(
                    "Maven could not resolve the Kafka jars from Maven Central "
                    f"(pom: {POM}):\n{(result.stdout + result.stderr)[-2000:]}"
                )
        return cp_file.read_text().strip()

    def _write_config(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        host = self.host
        name = self.listener
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.bootstrap.servers": f"{host}:{self.controller_port}",
            "listeners": f"{name}://{host}:{self.port},CONTROLLER://{host}:{self.controller_port}",
            "advertised.listeners": f"{name}://{host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": f"CONTROLLER:PLAINTEXT,{name}:{name}",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            # Topics come from `streamrec topics apply` or their owner (a reply topic's client):
            # a produce to any other name fails instead of creating it (a request's reply_to).
            "auto.create.topics.enable": "false",
            # Single node: internal topics cannot be replicated; few partitions start faster.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.cleaner.backoff.ms": "5000",
        }
        if self.clustered:
            del props["controller.quorum.bootstrap.servers"]
            props |= self._cluster_props()
        if self.secured:
            props |= {"inter.broker.listener.name": name, **self._security_props()}
        server_props = self.home / "server.properties"
        # 0600: a secured broker's file holds its SCRAM and keystore passwords.
        fd = os.open(server_props, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("".join(f"{k}={v}\n" for k, v in props.items()))
        log4j = self.home / "log4j2.yaml"
        log4j.write_text(LOG4J_TEMPLATE.read_text().replace("@LOG_FILE@", str(self.log_file)))
        return server_props

    def _cluster_props(self) -> dict[str, str]:
        """What a node of an N-node cluster has instead of the single node's settings."""
        voters = ",".join(
            f"{i}@{self.stack.kafka_node_host(i)}:{controller}"
            for i, (_, controller) in enumerate(self.ports, 1)
        )
        copies = str(min(3, self.nodes))
        in_sync = str(max(1, min(3, self.nodes) - 1))
        session_ms = self.stack.kafka_node_session_timeout_ms
        props = {
            # A static quorum of every node: all are formatted alike, none is special.
            "controller.quorum.voters": voters,
            "offsets.topic.replication.factor": copies,
            "transaction.state.log.replication.factor": copies,
            "transaction.state.log.min.isr": in_sync,
            "share.coordinator.state.topic.replication.factor": copies,
            "share.coordinator.state.topic.min.isr": in_sync,
            # Topics made by a client that names no replication (Faust's changelogs name it).
            "default.replication.factor": copies,
            "min.insync.replicas": in_sync,
            # A dead node is fenced (its partitions led elsewhere, itself out of every ISR)
            # after this long without a heartbeat: the longest an acks=all producer stalls.
            "broker.heartbeat.interval.ms": str(max(250, session_ms // 6)),
            "broker.session.timeout.ms": str(session_ms),
            "replica.lag.time.max.ms": str(max(10_000, 2 * session_ms)),
            # Fewer threads per JVM: three nodes and the platform share two cores.
            "num.network.threads": "2",
            "num.io.threads": "2",
            "background.threads": "2",
        }
        return props

    @property
    def secured(self) -> bool:
        return self.settings.kafka.security_protocol == "SASL_SSL"

    @property
    def listener(self) -> str:
        return "SASL_SSL" if self.secured else "PLAINTEXT"

    def _password(self) -> str:
        password = self.settings.kafka.password.get_secret_value()
        if any(c in password for c in '"\\,[]='):
            # JAAS and the storage tool's --add-scram syntax have no escapes for these.
            raise StackError(
                'STREAMREC_KAFKA__PASSWORD may not contain any of " \\ , [ ] = for the local broker'
            )
        return password

    def _security_props(self) -> dict[str, str]:
        """SASL_SSL with SCRAM on the client listener; the broker logs in as the same user."""
        k = self.settings.kafka
        tls_dir = self.settings.tls_dir
        nodes = [self.stack.kafka_node_host(i) for i in range(1, self.nodes + 1)]
        pair = tls.ensure_server(tls_dir, "kafka", [self.stack.host, "localhost", *nodes])
        # The keystore's password only guards a file that is itself 0600 beside this one.
        store_password = secrets.token_urlsafe(18)
        keystore = tls.pkcs12(pair, tls_dir / "ca.pem", self.home / "keystore.p12", store_password)
        mechanism = k.sasl_mechanism.lower()
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{k.username}" password="{self._password()}";'
        )
        return {
            "sasl.enabled.mechanisms": k.sasl_mechanism,
            "sasl.mechanism.inter.broker.protocol": k.sasl_mechanism,
            f"listener.name.sasl_ssl.{mechanism}.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(keystore),
            "ssl.keystore.password": store_password,
            "ssl.key.password": store_password,
            # The broker is its own inter-broker client: it verifies itself against the CA.
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(tls_dir / "ca.pem"),
            "ssl.client.auth": "none",
        }

    def _java(self, main: str, *args: str, heap: str | None = None) -> list[str]:
        java = programs.require_java(self.stack.java)
        argv = [java]
        if heap:
            argv += [f"-Xms{heap}", f"-Xmx{heap}"]
        argv += [
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.yaml'}",
            f"-Dkafka.logs.dir={self.log_dir}",
            "-cp",
            self.classpath(),
            main,
            *args,
        ]
        return argv

    def tool(self, main: str, *args: str, timeout_s: float = 120.0) -> str:
        """Run one of Kafka's command-line tools (`main`: its class) to completion; its
        output, or a `StackError` with it."""
        result = subprocess.run(
            self._java(main, *args), capture_output=True, text=True, timeout=timeout_s, check=False
        )
        output = result.stdout + result.stderr
        if result.returncode != 0:
            raise StackError(f"{main.rsplit('.', 1)[-1]} failed:\n{output[-2000:]}")
        return output

    def _format_once(self, server_props: Path) -> None:
        marker = self.home / "listener"
        if (self.data_dir / "meta.properties").exists():
            formatted = marker.read_text().strip() if marker.exists() else "PLAINTEXT"
            if formatted != self.listener:
                # SCRAM credentials are written into the metadata log when it is formatted.
                raise StackError(
                    f"the Kafka storage in {self.data_dir} was formatted for {formatted}, "
                    f"not {self.listener}: run `streamrec down --purge` or use another "
                    "STREAMREC_STACK__STATE_DIR"
                )
            return
        cluster_id = self._cluster_id()
        # One node formats a dynamic quorum of itself; a cluster's nodes share static voters.
        quorum = [] if self.clustered else ["--standalone"]
        result = subprocess.run(
            self._java(
                "kafka.tools.StorageTool",
                "format",
                *quorum,
                "-t",
                cluster_id,
                "-c",
                str(server_props),
                *self._scram_args(),
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            output = result.stdout + result.stderr
            if self.secured:
                output = output.replace(self._password(), MASK)
            raise StackError(f"formatting Kafka storage failed:\n{output}")
        marker.write_text(self.listener)

    def _cluster_id(self) -> str:
        """A new id for a single node; the one id every node of a cluster is formatted with."""
        id_file = cluster_dir(self.settings) / "cluster.id"
        if self.clustered and id_file.exists():
            return id_file.read_text().strip()
        cluster_id = (
            subprocess.run(
                self._java("kafka.tools.StorageTool", "random-uuid"),
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        if self.clustered:
            id_file.parent.mkdir(parents=True, exist_ok=True)
            id_file.write_text(cluster_id + "\n")
        return cluster_id

    def _scram_args(self) -> list[str]:
        """The SCRAM user, created at format time (KRaft keeps it in the metadata log)."""
        if not self.secured:
            return []
        k = self.settings.kafka
        credential = f"{k.sasl_mechanism}=[name={k.username},password={self._password()}]"
        return ["--add-scram", credential]

    def start(self) -> bool:
        """Start the broker unless it runs already; True if this call started it."""
        started = self.launch()
        if started:
            self.wait_ready()
        return started

    def launch(self) -> bool:
        """Format (once) and spawn the node without waiting for it: a cluster's nodes answer
        only once a majority of its controllers runs, so `up` launches them all first."""
        if self.pid() is not None:
            return False
        what = "Kafka" if not self.clustered else f"Kafka node {self.node_id}"
        prefix = netns.exec_prefix(self.settings, self.node_id) if self.stack.kafka_netns else []
        if not self.stack.kafka_netns:  # in a namespace of its own, every port is its own
            processes.ensure_ports_free(
                self.host,
                {what: self.port, f"{what} controller": self.controller_port},
                processes.CLUSTER_PORT_VARIABLES
                if self.clustered
                else processes.STACK_PORT_VARIABLES,
            )
        server_props = self._write_config()
        self._format_once(server_props)
        heap = self.stack.kafka_node_heap if self.clustered else self.stack.kafka_heap
        argv = [*prefix, *self._java("kafka.Kafka", str(server_props), heap=heap)]
        self._proc = processes.spawn(argv, self.stdout_file, self.pid_file)
        return True

    def wait_ready(self) -> None:
        proc = self._proc
        processes.wait_until(
            self.ping,
            what="Kafka broker" if not self.clustered else f"Kafka node {self.node_id}",
            timeout_s=self.stack.start_timeout_s,
            log_file=self.log_file,
            alive=lambda: proc.poll() is None if proc is not None else self.pid() is not None,
        )

    def ping(self, timeout_s: float = 1.0) -> bool:
        """True when the broker answers a metadata request with itself as a live broker."""
        if not processes.port_in_use(self.host, self.port):
            return False
        config: dict = {**self.settings.kafka_config(), "logger": _SILENT}
        config["bootstrap.servers"] = self.address
        admin = AdminClient(config)
        try:
            brokers = admin.list_topics(timeout=timeout_s).brokers
        except Exception:
            return False
        return self.node_id in brokers if self.clustered else len(brokers) > 0

    def stop(self, timeout_s: float = 30.0) -> bool:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        processes.stop(pid, self.pid_file, timeout_s=timeout_s)
        return True

    def kill(self) -> bool:
        """SIGKILL the node, what a crash looks like (fault tests); its data stays."""
        pid = self.pid()
        if pid is None:
            return False
        processes.kill(pid, self.pid_file)
        return True
