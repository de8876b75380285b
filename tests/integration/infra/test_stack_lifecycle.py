"""`up`, `status` and `down` on a stack of the test's own (not the session's)."""

import socket

import pytest

from streamrec.infra import processes
from streamrec.infra.errors import MissingProgramError, PortInUseError

pytestmark = pytest.mark.integration


def test_up_twice_keeps_one_broker_and_down_leaves_no_process(stack_factory):
    settings, manager = stack_factory()
    assert manager.up() == {"redis": True, "kafka": True}
    kafka_pid, redis_pid = manager.kafka.pid(), manager.redis.pid()
    assert manager.up() == {"redis": False, "kafka": False}
    assert (manager.kafka.pid(), manager.redis.pid()) == (kafka_pid, redis_pid)
    assert all(p.answers for p in manager.status() if p.name in ("kafka", "redis"))

    assert manager.down() == {"kafka": True, "redis": True}
    for pid in (kafka_pid, redis_pid):
        assert not processes._alive(pid)
    for port in (settings.stack.kafka_port, settings.stack.redis_port):
        assert not processes.port_in_use("127.0.0.1", port)
    assert (settings.state_dir / "kafka" / "data" / "meta.properties").exists()  # data kept

    # Restarting on the kept data works (storage is formatted once).
    assert manager.up()["kafka"] is True
    manager.down(purge=True)
    assert not settings.state_dir.exists()


def test_a_taken_port_is_named(stack_factory):
    settings, manager = stack_factory()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", settings.stack.redis_port))
        squatter.listen()
        with pytest.raises(PortInUseError, match=f"Redis port {settings.stack.redis_port}"):
            manager.up()


def test_a_missing_program_is_named_before_anything_starts(stack_factory):
    _settings, manager = stack_factory(stack={"redis_server": "redis-server-missing"})
    with pytest.raises(MissingProgramError, match="apt-get install -y redis-server"):
        manager.up()
    assert manager.kafka.pid() is None
