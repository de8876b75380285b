"""What a multi-node stack writes and how clients and topics follow its size (no processes)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from streamrec.infra.errors import StackError
from streamrec.infra.kafka_broker import KafkaBroker, cluster_dir
from streamrec.infra.settings import Settings, SettingsError
from streamrec.infra.stack import StackManager, kafka_layout
from streamrec.streams.admin import TopicManager
from streamrec.topics import ALL_TOPICS, EVENTS_INTERACTIONS, RECS_RESPONSES


def _settings(tmp_path: Path, **stack: object) -> Settings:
    return Settings().with_overrides(stack={"state_dir": tmp_path, **stack})


def _props(broker: KafkaBroker) -> dict[str, str]:
    lines = broker._write_config().read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line)


def test_one_node_is_the_default_and_unchanged(tmp_path):
    settings = _settings(tmp_path)
    manager = StackManager(settings)
    assert [n.name for n in manager.kafka_nodes] == ["kafka"]
    assert manager.kafka.home == tmp_path.resolve() / "kafka"
    assert settings.kafka_bootstrap == f"127.0.0.1:{settings.stack.kafka_port}"
    assert settings.replication_factor == 1
    props = _props(manager.kafka)
    assert props["node.id"] == "1" and "controller.quorum.voters" not in props
    assert props["offsets.topic.replication.factor"] == "1"


def test_three_nodes_have_their_own_ports_files_and_one_static_quorum(tmp_path):
    settings = _settings(tmp_path, kafka_brokers=3, kafka_port=30000, kafka_controller_port=30001)
    assert settings.stack.kafka_node_ports() == [(30000, 30001), (30010, 30011), (30020, 30021)]
    assert settings.kafka_bootstrap == "127.0.0.1:30000,127.0.0.1:30010,127.0.0.1:30020"
    assert settings.replication_factor == 3
    nodes = StackManager(settings).kafka_nodes
    assert [n.name for n in nodes] == ["kafka-1", "kafka-2", "kafka-3"]
    assert len({n.home for n in nodes}) == 3 and len({n.log_file for n in nodes}) == 3
    props = [_props(n) for n in nodes]
    voters = "1@127.0.0.1:30001,2@127.0.0.1:30011,3@127.0.0.1:30021"
    for node_id, p in enumerate(props, 1):
        assert p["node.id"] == str(node_id)
        assert p["controller.quorum.voters"] == voters
        assert "controller.quorum.bootstrap.servers" not in p  # static voters only
        assert p["offsets.topic.replication.factor"] == "3"
        assert p["transaction.state.log.min.isr"] == "2"
        assert p["min.insync.replicas"] == "2"
    assert props[1]["listeners"] == "PLAINTEXT://127.0.0.1:30010,CONTROLLER://127.0.0.1:30011"


def test_extra_ports_must_cover_every_extra_node(tmp_path):
    settings = _settings(tmp_path, kafka_brokers=3, kafka_extra_ports=[4000, 4001])
    assert [p for p, _ in settings.stack.kafka_node_ports()][1:] == [4000, 4001]
    with pytest.raises(SettingsError, match="kafka_extra_ports needs 2 ports"):
        _settings(tmp_path, kafka_brokers=3, kafka_extra_ports=[4000])


def test_a_state_dir_remembers_its_cluster(tmp_path):
    settings = _settings(tmp_path)
    record = cluster_dir(settings) / "nodes.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"ports": [[5000, 5001], [5002, 5003], [5004, 5005]]}))
    # `down` and `status` without the setting still see every node, on its own ports.
    nodes = StackManager(settings).kafka_nodes
    assert [(n.name, n.address) for n in nodes][-1] == ("kafka-3", "127.0.0.1:5004")
    three = settings.with_overrides(stack={"kafka_brokers": 3})
    assert kafka_layout(three) == three.stack.kafka_node_ports()  # asked for: its ports
    with pytest.raises(StackError, match="holds a 3-node Kafka cluster, not 5"):
        kafka_layout(settings.with_overrides(stack={"kafka_brokers": 5}))


def test_durable_topics_need_two_copies_in_sync_and_transient_ones_one(tmp_path):
    settings = _settings(tmp_path, kafka_brokers=3)
    manager = TopicManager(settings)
    assert manager.replication_factor(3) == 3 and manager.replication_factor(5) == 3
    assert manager.replication_factor(1) == 1
    assert manager.config_of(EVENTS_INTERACTIONS, 3)["min.insync.replicas"] == "2"
    assert manager.config_of(RECS_RESPONSES, 3)["min.insync.replicas"] == "1"
    assert manager.config_of(EVENTS_INTERACTIONS, 1)["min.insync.replicas"] == "1"
    # An explicit setting wins over the broker count.
    pinned = TopicManager(settings.with_overrides(kafka={"replication_factor": 2}))
    assert pinned.replication_factor(3) == 2
    assert pinned.config_of(EVENTS_INTERACTIONS, 2)["min.insync.replicas"] == "1"
    assert {s.name for s in ALL_TOPICS if not s.durable} == {"recs.requests", "recs.responses"}


def _topic(replicas: list[list[int]]) -> SimpleNamespace:
    return SimpleNamespace(
        partitions={i: SimpleNamespace(replicas=r) for i, r in enumerate(replicas)}
    )


def test_raising_replication_keeps_the_leader_first_and_spreads_the_new_copies(
    tmp_path, monkeypatch
):
    manager = TopicManager(_settings(tmp_path, kafka_brokers=3))
    plans: list[list[dict]] = []
    monkeypatch.setattr(manager, "_reassign", plans.append)
    topics = {"a": _topic([[1], [2], [3]]), "b": _topic([[1, 2, 3]])}
    assert manager._raise_replication(topics, [1, 2, 3], 3) == ["a"]
    (plan,) = plans
    assert [p["replicas"][0] for p in plan] == [1, 2, 3]  # the leader stays
    assert all(sorted(p["replicas"]) == [1, 2, 3] for p in plan)
    assert manager._raise_replication({"b": topics["b"]}, [1, 2, 3], 3) == []
    assert len(plans) == 1  # nothing to do: no reassignment at all
