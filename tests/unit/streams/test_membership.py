"""How consumers join their groups and how long they wait on one broker (no broker needed)."""

from __future__ import annotations

import faust
import pytest

from streamrec.infra.settings import Settings, SettingsError
from streamrec.streams.app import create_app
from streamrec.streams.membership import faust_membership, librdkafka_membership


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings().with_overrides(stack={"state_dir": tmp_path})


def test_faust_waits_the_request_timeout_not_its_default_90_s(settings):
    app = create_app(settings, "membership-test")
    assert isinstance(app, faust.App)
    assert app.conf.broker_request_timeout == 15.0
    assert app.conf.broker_session_timeout == 10.0


def test_faust_request_timeout_stays_above_a_long_session(settings):
    # Faust refuses a request timeout below the session timeout.
    long = settings.with_overrides(kafka={"session_timeout_s": 45.0, "request_timeout_s": 5.0})
    assert faust_membership(long, "g")["broker_request_timeout"] == 50.0
    assert create_app(long, "membership-long").conf.broker_request_timeout == 50.0


def test_librdkafka_clients_get_the_request_timeout_with_the_address(settings):
    quick = settings.with_overrides(kafka={"request_timeout_s": 4.0})
    assert quick.kafka_config()["socket.timeout.ms"] == "4000"
    assert librdkafka_membership(quick, "g")["session.timeout.ms"] == 10_000


def test_a_request_timeout_out_of_range_is_refused(settings):
    with pytest.raises(SettingsError, match="request_timeout_s"):
        settings.with_overrides(kafka={"request_timeout_s": 0.1})
