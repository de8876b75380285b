"""docker-compose.yml runs the same Kafka broker as `streamrec up` (no services)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

from streamrec.infra.kafka_broker import POM, KafkaBroker
from streamrec.infra.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "docker-compose.yml"
KAFKA_DIR = ROOT / "infra" / "kafka"
# Keys whose values differ on purpose: the container binds every interface and keeps its data
# in the compose volume, while `streamrec up` binds the stack host and the state dir.
PER_DEPLOYMENT = {"listeners", "advertised.listeners", "controller.quorum.bootstrap.servers"}


def pom_kafka_version() -> str:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = ET.parse(POM).getroot().findtext("m:properties/m:kafka.version", namespaces=ns)
    assert version, f"{POM} names no kafka.version"
    return version


def kafka_service() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]["kafka"]


def compose_kafka_version() -> str:
    """The Kafka version compose runs: an Apache image's tag, or the pom the build resolves."""
    service = kafka_service()
    build = service.get("build")
    if build is None:
        image = service["image"]
        match = re.fullmatch(r"apache/kafka(?:-native)?:(\S+)", image)
        assert match, f"compose runs {image!r}: neither built from the pom nor an Apache tag"
        return match.group(1)
    context = build if isinstance(build, str) else build["context"]
    assert (ROOT / context).resolve() == POM.parent.resolve(), context
    dockerfile = (POM.parent / "Dockerfile").read_text()
    copy = re.search(r"^COPY pom\.xml (\S+)$", dockerfile, re.M)
    assert copy, "the image must copy the pom"
    assert re.search(rf"mvn .*-f {re.escape(copy.group(1))} dependency:", dockerfile), (
        "the image must resolve its jars from that pom"
    )
    # A second version source (a pinned jar, a Kafka tarball) would let the two drift apart.
    assert not re.search(r"kafka[_-][\w.]*\d+\.\d+\.\d+", dockerfile, re.I), dockerfile
    return pom_kafka_version()


def test_compose_runs_the_kafka_version_of_the_pom() -> None:
    assert compose_kafka_version() == pom_kafka_version()


def entrypoint_properties() -> dict[str, str]:
    script = (KAFKA_DIR / "docker-entrypoint.sh").read_text()
    block = re.search(r"<<PROPS\n(.*?)\nPROPS\n", script, re.S)
    assert block, "the entrypoint writes no server.properties block"
    return dict(line.split("=", 1) for line in block.group(1).splitlines())


def test_compose_broker_has_the_config_of_streamrec_up(tmp_path: Path) -> None:
    settings = Settings().with_overrides(stack={"state_dir": tmp_path})
    written = KafkaBroker(settings)._write_config().read_text().splitlines()
    up = dict(line.split("=", 1) for line in written if line)
    compose = entrypoint_properties()
    assert compose.keys() == up.keys()
    assert compose["log.dirs"] == "$data"
    same = up.keys() - PER_DEPLOYMENT - {"log.dirs"}
    assert {k: compose[k] for k in same} == {k: up[k] for k in same}
    # The published port is the one `streamrec up` listens on, so one client config serves both.
    assert f"{settings.stack.kafka_port}:{settings.stack.kafka_port}" in kafka_service()["ports"]
    script = (KAFKA_DIR / "docker-entrypoint.sh").read_text()
    assert f"port=${{KAFKA_PORT:-{settings.stack.kafka_port}}}" in script


def test_neither_broker_creates_topics_on_its_own(tmp_path: Path) -> None:
    # A produce to a misspelled name (or a request's reply_to) must fail, not make a topic:
    # every topic comes from `streamrec topics apply` or the client that owns it.
    settings = Settings().with_overrides(stack={"state_dir": tmp_path})
    written = KafkaBroker(settings)._write_config().read_text().splitlines()
    up = dict(line.split("=", 1) for line in written if line)
    assert up["auto.create.topics.enable"] == "false"
    assert entrypoint_properties()["auto.create.topics.enable"] == "false"
