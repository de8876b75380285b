"""A cluster whose nodes run in network namespaces: where each listens, what clients
bootstrap from, and the names its namespaces get (no processes, no namespaces made)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from streamrec.infra import netns
from streamrec.infra.errors import StackError
from streamrec.infra.kafka_broker import KafkaBroker
from streamrec.infra.settings import Settings, SettingsError
from streamrec.infra.stack import StackManager


def _settings(tmp_path: Path, **stack: object) -> Settings:
    return Settings().with_overrides(
        stack={"state_dir": tmp_path, "kafka_brokers": 3, "kafka_netns": True, **stack}
    )


def _props(broker: KafkaBroker) -> dict[str, str]:
    lines = broker._write_config().read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line)


def test_each_node_listens_and_is_reached_at_its_own_address(tmp_path):
    settings = _settings(tmp_path, kafka_port=30000, kafka_controller_port=30001)
    assert settings.kafka_bootstrap == "10.231.0.2:30000,10.231.0.3:30010,10.231.0.4:30020"
    nodes = StackManager(settings).kafka_nodes
    assert [n.address for n in nodes] == [
        "10.231.0.2:30000",
        "10.231.0.3:30010",
        "10.231.0.4:30020",
    ]
    props = [_props(n) for n in nodes]
    voters = "1@10.231.0.2:30001,2@10.231.0.3:30011,3@10.231.0.4:30021"
    assert {p["controller.quorum.voters"] for p in props} == {voters}
    assert props[2]["listeners"] == "PLAINTEXT://10.231.0.4:30020,CONTROLLER://10.231.0.4:30021"
    assert props[2]["advertised.listeners"] == "PLAINTEXT://10.231.0.4:30020"


def test_without_namespaces_every_node_stays_on_the_stack_host(tmp_path):
    settings = _settings(tmp_path, kafka_netns=False)
    assert {settings.stack.kafka_node_host(i) for i in (1, 2, 3)} == {"127.0.0.1"}


def test_a_node_is_started_inside_its_namespace(tmp_path, monkeypatch):
    settings = _settings(tmp_path)
    node = StackManager(settings).kafka_nodes[1]
    monkeypatch.setattr(netns, "_ip", lambda: "/sbin/ip")
    assert netns.exec_prefix(settings, 2) == [
        "/sbin/ip",
        "netns",
        "exec",
        netns.node_net(settings, 2).namespace,
    ]
    assert node.host == "10.231.0.3"


def test_the_subnet_is_a_setting_and_must_hold_every_node(tmp_path):
    settings = _settings(tmp_path, kafka_netns_subnet="192.168.77.0/28")
    assert settings.stack.kafka_node_host(3) == "192.168.77.4"
    with pytest.raises(SettingsError, match="too few addresses"):
        _settings(tmp_path, kafka_netns_subnet="192.168.77.0/30")
    with pytest.raises(SettingsError):
        _settings(tmp_path, kafka_netns_subnet="not-a-network")


def test_names_fit_linux_interface_names_and_differ_per_state_dir(tmp_path):
    a, b = _settings(tmp_path / "a"), _settings(tmp_path / "b")
    for settings in (a, b):
        names = [netns.bridge_name(settings)]
        for node_id in (1, 2, 3, 9):
            net = netns.node_net(settings, node_id)
            names += [net.host_end, net.node_end]
        assert all(len(name) <= 15 for name in names), names  # IFNAMSIZ - 1
        assert len(set(names)) == len(names)
    assert netns.node_net(a, 1).namespace != netns.node_net(b, 1).namespace
    assert netns.bridge_name(a) != netns.bridge_name(b)


def test_cutting_a_node_without_namespaces_says_how_to_get_them(tmp_path, monkeypatch):
    settings = _settings(tmp_path)
    monkeypatch.setattr(netns, "_link_exists", lambda name: False)
    with pytest.raises(StackError, match="STREAMREC_STACK__KAFKA_NETNS=true"):
        netns.cut(settings, 2)


def test_making_namespaces_needs_root(tmp_path, monkeypatch):
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    with pytest.raises(StackError, match="needs root"):
        netns.ensure(_settings(tmp_path), 3)


def test_a_subnet_another_interface_holds_is_refused_naming_it(tmp_path, monkeypatch):
    shown = (
        "1: lo    inet 127.0.0.1/8 scope host lo\n"
        "9: sr0123abb    inet 10.231.0.1/24 scope global sr0123abb\n"
    )
    calls: list[tuple[str, ...]] = []

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        calls.append(args)
        return subprocess.CompletedProcess(args, 0, stdout=shown if "addr" in args else "")

    monkeypatch.setattr(netns.os, "geteuid", lambda: 0)
    monkeypatch.setattr(netns, "_link_exists", lambda name: False)
    monkeypatch.setattr(netns, "_run", run)
    with pytest.raises(StackError, match=r"10\.231\.0\.0/24 is already on interface sr0123abb"):
        netns.ensure(_settings(tmp_path), 3)
    assert not any("add" in c for c in calls)  # nothing was made
    # Another network is free: the bridge is made.
    netns.ensure(_settings(tmp_path, kafka_netns_subnet="10.77.0.0/24"), 3)
    assert ("link", "add", netns.bridge_name(_settings(tmp_path)), "type", "bridge") in calls


def test_a_secured_node_has_a_certificate_for_every_node_address(tmp_path):
    from cryptography import x509

    settings = _settings(tmp_path).with_overrides(
        kafka={"security_protocol": "SASL_SSL", "password": "s3cret-pass"}
    )
    node = StackManager(settings).kafka_nodes[0]
    props = _props(node)
    assert props["listeners"].startswith("SASL_SSL://10.231.0.2:")
    cert = x509.load_pem_x509_certificate((settings.tls_dir / "kafka.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    addresses = {str(a) for a in names.get_values_for_type(x509.IPAddress)}
    assert {"10.231.0.2", "10.231.0.3", "10.231.0.4"} <= addresses
