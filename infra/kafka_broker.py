"""A single-node Apache Kafka broker in KRaft mode, from Maven Central jars.

Responsibilities:
- resolve the broker's classpath from `infra/kafka/pom.xml` (Maven caches the jars in ~/.m2;
  the classpath is cached in the state dir, keyed by the pom's content);
- write `server.properties` and a log4j2 config, format the storage once with a cluster id;
- start `kafka.Kafka` under Java, wait until it answers a metadata request, stop it by pid.

The version choice is recorded in docs/adr/0001-kafka-version.md.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import subprocess
from pathlib import Path

from confluent_kafka.admin import AdminClient

from streamrec.infra import processes, programs, tls
from streamrec.infra.errors import StackError
from streamrec.infra.settings import MASK, Settings

POM = Path(__file__).parent / "kafka" / "pom.xml"
LOG4J_TEMPLATE = Path(__file__).parent / "kafka" / "log4j2.yaml"
PROCESS_MARKER = "kafka.Kafka"

# Keeps librdkafka's connection-refused chatter out of the CLI while probing.
_SILENT = logging.getLogger("streamrec.kafka.probe")
_SILENT.setLevel(logging.CRITICAL + 1)
_SILENT.propagate = False


class KafkaBroker:
    """Owns the local broker's files and process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stack = settings.stack
        self.home = settings.state_dir / "kafka"
        self.data_dir = self.home / "data"
        self.log_dir = settings.state_dir / "logs"
        self.pid_file = self.home / "kafka.pid"
        self.log_file = self.log_dir / "kafka.log"
        self.stdout_file = self.log_dir / "kafka.out"

    @property
    def address(self) -> str:
        return f"{self.stack.host}:{self.stack.kafka_port}"

    def pid(self) -> int | None:
        return processes.read_pid(self.pid_file, PROCESS_MARKER)

    def classpath(self) -> str:
        """The broker's runtime classpath, resolved by Maven once per pom version."""
        digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:16]
        cp_file = self.home / f"classpath-{digest}.txt"
        if not cp_file.exists():
            mvn = programs.require(self.stack.mvn, "mvn")
            self.home.mkdir(parents=True, exist_ok=True)
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
        s = self.stack
        name = self.listener
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"{s.host}:{s.kafka_controller_port}",
            "listeners": f"{name}://{s.host}:{s.kafka_port},CONTROLLER://{s.host}:{s.kafka_controller_port}",
            "advertised.listeners": f"{name}://{s.host}:{s.kafka_port}",
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
        pair = tls.ensure_server(tls_dir, "kafka", [self.stack.host, "localhost"])
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
        result = subprocess.run(
            self._java(
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
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

    def _scram_args(self) -> list[str]:
        """The SCRAM user, created at format time (KRaft keeps it in the metadata log)."""
        if not self.secured:
            return []
        k = self.settings.kafka
        credential = f"{k.sasl_mechanism}=[name={k.username},password={self._password()}]"
        return ["--add-scram", credential]

    def start(self) -> bool:
        """Start the broker unless it runs already; True if this call started it."""
        if self.pid() is not None:
            return False
        processes.ensure_ports_free(
            self.stack.host,
            {"Kafka": self.stack.kafka_port, "Kafka controller": self.stack.kafka_controller_port},
        )
        server_props = self._write_config()
        self._format_once(server_props)
        argv = self._java("kafka.Kafka", str(server_props), heap=self.stack.kafka_heap)
        proc = processes.spawn(argv, self.stdout_file, self.pid_file)
        processes.wait_until(
            self.ping,
            what="Kafka broker",
            timeout_s=self.stack.start_timeout_s,
            log_file=self.log_file,
            alive=lambda: proc.poll() is None,
        )
        return True

    def ping(self, timeout_s: float = 1.0) -> bool:
        """True when the broker answers a metadata request with itself as a live broker."""
        if not processes.port_in_use(self.stack.host, self.stack.kafka_port):
            return False
        config: dict = {**self.settings.kafka_config(), "logger": _SILENT}
        config["bootstrap.servers"] = self.address
        admin = AdminClient(config)
        try:
            return len(admin.list_topics(timeout=timeout_s).brokers) > 0
        except Exception:
            return False

    def stop(self) -> bool:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        processes.stop(pid, self.pid_file, timeout_s=30)
        return True
