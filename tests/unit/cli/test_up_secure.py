"""`streamrec up --secure`: which settings it secures, and what it needs first."""

from __future__ import annotations

import pytest
import typer

from streamrec.cli.stack import _secured
from streamrec.infra.settings import Settings


def test_secure_needs_both_passwords_and_names_the_missing_one(capsys):
    with pytest.raises(typer.Exit) as stopped:
        _secured(Settings().with_overrides(kafka={"password": "k-planted"}))
    assert stopped.value.exit_code == 2
    out = capsys.readouterr().out
    assert "STREAMREC_REDIS__PASSWORD" in out and "k-planted" not in out


def test_secure_sets_sasl_ssl_and_redis_tls_and_prints_the_clients_variables(capsys):
    base = Settings().with_overrides(
        kafka={"password": "k-planted"}, redis={"password": "r-planted"}
    )
    secured = _secured(base)
    assert secured.kafka.security_protocol == "SASL_SSL"
    assert (secured.redis.tls, secured.redis.username) == (True, "streamrec")
    out = capsys.readouterr().out
    assert "STREAMREC_KAFKA__SECURITY_PROTOCOL=SASL_SSL" in out
    assert "STREAMREC_REDIS__TLS=True" in out
    assert "planted" not in out
