"""Sentinel configuration: where clients find the primary, and what they send it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from pydantic import ValidationError

from streamrec.features.feast_store import repo_config
from streamrec.infra.errors import PortInUseError, StackError
from streamrec.infra.processes import free_port
from streamrec.infra.redis_clients import async_client, connection_kwargs, sync_client
from streamrec.infra.redis_server import sentinel_parts
from streamrec.infra.settings import Settings


def test_sentinels_from_the_environment_are_comma_separated(monkeypatch):
    monkeypatch.setenv("STREAMREC_REDIS__SENTINELS", "s1:26379, s2:26380,[::1]:26381")
    assert Settings().redis_sentinels == [("s1", 26379), ("s2", 26380), ("::1", 26381)]


@pytest.mark.parametrize("bad", ["s1", "s1:", ":26379", "s1:port", "s1:70000"])
def test_a_sentinel_without_host_and_port_is_refused(bad):
    with pytest.raises(ValidationError, match="a sentinel is host:port"):
        Settings(redis={"sentinels": [bad]})


def test_the_local_stack_sentinels_serve_only_the_local_redis():
    local = Settings(stack={"redis_sentinel": True, "redis_sentinel_ports": [1, 2, 3]})
    assert local.redis_sentinels == [("127.0.0.1", 1), ("127.0.0.1", 2), ("127.0.0.1", 3)]
    elsewhere = local.with_overrides(redis={"url": "redis://cache.internal:6379/0"})
    assert elsewhere.redis_sentinels == []
    assert Settings().redis_sentinels == []


def test_the_urls_database_credentials_and_tls_go_to_the_primary():
    assert connection_kwargs("redis://h:1/3") == {"db": 3}
    assert connection_kwargs("rediss://app:p%40ss@h:1/2?ssl_ca_certs=/ca.pem") == {
        "db": 2,
        "username": "app",
        "password": "p@ss",
        "ssl": True,
        "ssl_ca_certs": "/ca.pem",
    }


def test_clients_ask_the_sentinels_for_the_named_primary():
    settings = Settings(redis={"sentinels": ["s1:26379", "s2:26379"], "sentinel_master": "m"})
    for client in (sync_client(settings), async_client(settings)):
        pool = client.connection_pool
        assert pool.service_name == "m"
        assert [
            c.connection_pool.connection_kwargs["host"] for c in pool.sentinel_manager.sentinels
        ] == ["s1", "s2"]
    direct = sync_client(Settings(redis={"url": "redis://h:1/0"}))
    assert direct.connection_pool.connection_kwargs["host"] == "h"


def test_feast_reaches_the_online_store_through_the_sentinels(tmp_path: Path):
    settings = Settings(
        stack={"state_dir": tmp_path},
        redis={
            "url": "redis://app:pw@ignored:1/4",
            "sentinels": ["s1:26379", "s2:26380"],
            "sentinel_master": "m",
        },
    )
    store = repo_config(settings).online_store
    assert store.redis_type == "redis_sentinel"
    assert store.sentinel_master == "m"
    assert store.connection_string == "s1:26379,s2:26380,db=4,username=app,password=pw"


def test_stack_sentinels_refuse_what_they_cannot_follow(tmp_path: Path):
    base = Settings(stack={"state_dir": tmp_path, "redis_sentinel": True})
    assert [p.name for p in sentinel_parts(base)] == [
        "redis-replica",
        "redis-sentinel-1",
        "redis-sentinel-2",
        "redis-sentinel-3",
    ]
    assert sentinel_parts(base.with_overrides(stack={"redis_sentinel": False})) == []
    with pytest.raises(StackError, match="without TLS and passwords"):
        sentinel_parts(base.with_overrides(redis={"password": "pw"}))
    with pytest.raises(StackError, match="at least 3 ports"):
        sentinel_parts(base.with_overrides(stack={"redis_sentinel_ports": [1, 2]}))


def test_sentinels_survive_the_trip_to_a_child_process(monkeypatch):
    settings = Settings(redis={"sentinels": ["s1:26379", "s2:26380"]})
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    assert Settings().redis.sentinels == ["s1:26379", "s2:26380"]
    monkeypatch.setenv("STREAMREC_REDIS__SENTINELS", "[]")
    assert Settings().redis_sentinels == []


@pytest.mark.parametrize(
    ("part", "label", "variable"),
    [
        (0, "Redis replica", "STREAMREC_STACK__REDIS_REPLICA_PORT"),
        (1, "Redis Sentinel 1", "STREAMREC_STACK__REDIS_SENTINEL_PORTS"),
    ],
)
def test_a_taken_port_names_the_part_and_the_setting_that_moves_it(
    tmp_path: Path, part: int, label: str, variable: str
):
    port = free_port()
    settings = Settings(
        stack={
            "state_dir": tmp_path,
            "redis_sentinel": True,
            "redis_replica_port": port,
            "redis_sentinel_ports": [port, free_port(), free_port()],
        }
    )
    with socket.create_server(("127.0.0.1", port)), pytest.raises(PortInUseError) as caught:
        sentinel_parts(settings)[part].start()
    assert f"{label} port {port}" in str(caught.value)
    assert variable in str(caught.value)
