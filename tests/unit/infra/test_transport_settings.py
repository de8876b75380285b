"""Secured transports as settings: what each client is handed, and that the secrets stay
secret in what is printed. tests/integration/infra/test_secure_stack.py runs the clients
against the broker and redis-server started that way; ClickHouse has no server here (chDB
is embedded), so how its credentials reach clickhouse-connect is checked at the call."""

from __future__ import annotations

import ipaddress
import ssl

import clickhouse_connect
import pytest
from cryptography import x509
from redis.connection import parse_url

from streamrec.features.feast_store import redis_connection_string
from streamrec.infra import clickhouse, tls
from streamrec.infra.errors import SettingsError, StackError
from streamrec.infra.kafka_broker import KafkaBroker
from streamrec.infra.settings import Settings
from streamrec.streams.app import broker_credentials

SECRET = "p@ss:w/rd-planted"


@pytest.fixture
def base(tmp_path) -> Settings:
    return Settings().with_overrides(stack={"state_dir": tmp_path})


def test_plaintext_kafka_clients_get_the_address_and_the_request_timeout_only(base):
    assert base.kafka_config() == {
        "bootstrap.servers": base.kafka_bootstrap,
        "socket.timeout.ms": "15000",
    }


def test_sasl_ssl_clients_get_mechanism_user_password_and_the_generated_ca(base):
    s = base.with_overrides(kafka={"security_protocol": "SASL_SSL", "password": SECRET})
    assert s.kafka_config() == {
        "bootstrap.servers": s.kafka_bootstrap,
        "socket.timeout.ms": "15000",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "streamrec",
        "sasl.password": SECRET,
        "ssl.ca.location": str(s.state_dir / "tls" / "ca.pem"),
    }
    given = s.with_overrides(kafka={"ca_file": "/etc/ca.pem"})
    assert given.kafka_config()["ssl.ca.location"] == "/etc/ca.pem"


def test_sasl_ssl_without_a_password_is_refused_by_name(base):
    with pytest.raises(SettingsError, match="STREAMREC_KAFKA__PASSWORD"):
        base.with_overrides(kafka={"security_protocol": "SASL_SSL"})


def test_faust_gets_scram_over_tls_and_its_repr_hides_the_password(base):
    tls.ensure_ca(base.tls_dir)
    s = base.with_overrides(kafka={"security_protocol": "SASL_SSL", "password": SECRET})
    creds = broker_credentials(s)
    assert creds.protocol.value == "SASL_SSL"
    assert creds.mechanism.value == "SCRAM-SHA-512"
    assert (creds.username, creds.password) == ("streamrec", SECRET)
    assert creds.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert SECRET not in repr(creds)


def test_redis_url_carries_the_acl_user_tls_and_ca_and_redis_py_reads_them_back(base):
    s = base.with_overrides(redis={"username": "app", "password": SECRET, "tls": True})
    parsed = parse_url(s.redis_url)
    assert s.redis_url.startswith("rediss://")
    assert (parsed["username"], parsed["password"]) == ("app", SECRET)
    assert parsed["ssl_ca_certs"] == str(s.state_dir / "tls" / "ca.pem")
    feast = redis_connection_string(s.redis_url)
    assert f"username=app,password={SECRET},ssl=true,ssl_ca_certs=" in feast
    # A whole URL given keeps precedence over the parts.
    given = s.with_overrides(redis={"url": "redis://h:1/0"})
    assert given.redis_url == "redis://h:1/0"


def test_no_transport_secret_in_printable_repr_or_a_settings_error(base, monkeypatch):
    s = base.with_overrides(
        kafka={"security_protocol": "SASL_SSL", "password": SECRET},
        redis={"username": "app", "password": SECRET, "tls": True},
        clickhouse={"username": "ch", "password": SECRET},
    )
    assert SECRET not in repr(s)
    assert SECRET not in str(s.printable())
    assert s.printable()["STREAMREC_KAFKA__PASSWORD"] == "**********"
    # The child's environment rebuilds the same object, secrets included.
    for name, value in s.to_env().items():
        monkeypatch.setenv(name, value)
    assert Settings() == s
    monkeypatch.setenv("STREAMREC_KAFKA__SECURITY_PROTOCOL", "SASL_SSL_TYPO")
    with pytest.raises(SettingsError) as bad:
        Settings()
    assert SECRET not in str(bad.value)


def test_clickhouse_server_credentials_reach_clickhouse_connect(base, monkeypatch):
    calls: list[dict] = []
    monkeypatch.setattr(clickhouse_connect, "get_client", lambda **kw: calls.append(kw))
    s = base.with_overrides(clickhouse={"username": "ch", "password": SECRET})
    clickhouse.get_client("http://db:8123", **clickhouse.credentials(s))
    assert calls[-1] == {"dsn": "http://db:8123", "username": "ch", "password": SECRET}
    clickhouse.get_client("http://db:8123", **clickhouse.credentials(base))
    assert calls[-1] == {"dsn": "http://db:8123"}  # unset: the DSN's own user
    clickhouse.get_client("chdb:///x", **clickhouse.credentials(s))
    assert calls[-1] == {"dsn": "chdb:///x"}  # embedded: no login


def test_server_certificates_name_the_hosts_and_chain_to_the_ca(tmp_path):
    pair = tls.ensure_server(tmp_path, "kafka", ["127.0.0.1", "localhost"])
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert oct(pair.key.stat().st_mode & 0o777) == "0o600"
    # Kept while the hosts are the same; remade when they change.
    first = pair.cert.read_bytes()
    assert (
        tls.ensure_server(tmp_path, "kafka", ["localhost", "127.0.0.1"]).cert.read_bytes() == first
    )
    assert tls.ensure_server(tmp_path, "kafka", ["127.0.0.2"]).cert.read_bytes() != first


def test_the_broker_refuses_a_password_its_config_syntax_cannot_hold(base):
    s = base.with_overrides(kafka={"security_protocol": "SASL_SSL", "password": 'a"b'})
    with pytest.raises(StackError, match="may not contain"):
        KafkaBroker(s)._security_props()
