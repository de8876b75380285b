"""Network namespaces for the local Kafka nodes, so that one node can be cut off the network.

With `stack.kafka_netns`, each node of the local Kafka runs in a network namespace of its own
(`ip netns`), joined to the host by a veth pair whose host end is a port of one private
bridge. The bridge holds the first address of `stack.kafka_netns_subnet`, node N the
(1 + N)th; nothing routes that network anywhere else. Clients on the host reach every node
through the bridge, and the nodes reach each other through it.

`cut(n)` sets the host end of node n's veth down: packets to and from it are dropped, in
both directions and for every peer (clients, the other nodes, their controllers), while the
node itself goes on running: a network partition, not a crash. `heal(n)` sets it up again.

Names derive from the state dir, so two stacks on one host keep separate namespaces (they
still need separate subnets). Everything here needs root and iproute2; the errors say so.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path

from streamrec.infra.errors import StackError
from streamrec.infra.settings import Settings

# Linux limits interface names to 15 characters: "sr" + 6 hex digits + a letter + the node.
_TAG_LEN = 6


@dataclass(frozen=True)
class NodeNet:
    """The names and address of one node's namespace."""

    namespace: str
    host_end: str  # the veth end on the host, a port of the bridge: what `cut` sets down
    node_end: str  # the veth end inside the namespace
    address: str


def tag(state_dir: Path) -> str:
    return hashlib.sha1(str(state_dir.resolve()).encode()).hexdigest()[:_TAG_LEN]


def bridge_name(settings: Settings) -> str:
    return f"sr{tag(settings.state_dir)}b"


def node_net(settings: Settings, node_id: int) -> NodeNet:
    t = tag(settings.state_dir)
    return NodeNet(
        namespace=f"streamrec-{t}-{node_id}",
        host_end=f"sr{t}h{node_id}",
        node_end=f"sr{t}n{node_id}",
        address=settings.stack.kafka_node_host(node_id),
    )


def exec_prefix(settings: Settings, node_id: int) -> list[str]:
    """What runs a command inside node `node_id`'s namespace (`ip netns exec` execs it:
    the pid is the command's own)."""
    return [_ip(), "netns", "exec", node_net(settings, node_id).namespace]


def _ip() -> str:
    found = shutil.which("ip")
    if found is None:
        raise StackError(
            "stack.kafka_netns needs iproute2's `ip` (Debian: apt-get install iproute2)"
        )
    return found


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([_ip(), *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise StackError(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")
    return result


def _namespaces() -> set[str]:
    listed = _run("netns", "list", check=False).stdout.splitlines()
    return {line.split()[0] for line in listed if line.strip()}


def _link_exists(name: str) -> bool:
    return _run("link", "show", name, check=False).returncode == 0


def ensure(settings: Settings, nodes: int) -> None:
    """The bridge and each node's namespace, made where missing (idempotent)."""
    if os.geteuid() != 0:
        raise StackError(
            "stack.kafka_netns needs root (it makes network namespaces and a bridge); "
            "run as root or unset STREAMREC_STACK__KAFKA_NETNS"
        )
    subnet = settings.stack.kafka_netns_subnet
    bridge = bridge_name(settings)
    if not _link_exists(bridge):
        taken = _holder_of(subnet)
        if taken:
            # Two bridges with one network make the host's routes to both ambiguous.
            raise StackError(
                f"{subnet} is already on interface {taken} (another stack's Kafka "
                "namespaces?): stop that stack, or set STREAMREC_STACK__KAFKA_NETNS_SUBNET "
                "to a free network"
            )
        _run("link", "add", bridge, "type", "bridge")
        _run("addr", "add", f"{subnet.network_address + 1}/{subnet.prefixlen}", "dev", bridge)
    _run("link", "set", bridge, "up")
    present = _namespaces()
    for node_id in range(1, nodes + 1):
        net = node_net(settings, node_id)
        if net.namespace not in present:
            _run("netns", "add", net.namespace)
        ns = ["-n", net.namespace]
        _run(*ns, "link", "set", "lo", "up")
        if not _link_exists(net.host_end):
            # Set up only when made: a later `up` must not heal a node someone cut.
            _run("link", "add", net.host_end, "type", "veth", "peer", "name", net.node_end)
            _run("link", "set", net.node_end, "netns", net.namespace)
            _run(*ns, "addr", "add", f"{net.address}/{subnet.prefixlen}", "dev", net.node_end)
            _run("link", "set", net.host_end, "master", bridge, "up")
            _run(*ns, "link", "set", net.node_end, "up")


def _holder_of(subnet: IPv4Network) -> str | None:
    """The host interface that has an address in `subnet`, if one has."""
    for line in _run("-o", "-4", "addr", "show").stdout.splitlines():
        fields = line.split()
        if "inet" in fields:
            address = fields[fields.index("inet") + 1]
            if IPv4Interface(address).network.overlaps(subnet):
                return fields[1]
    return None


def cut(settings: Settings, node_id: int) -> None:
    """Drop every packet to and from node `node_id` until `heal`; the node keeps running."""
    _require(settings, node_id)
    _run("link", "set", node_net(settings, node_id).host_end, "down")


def heal(settings: Settings, node_id: int) -> None:
    _require(settings, node_id)
    _run("link", "set", node_net(settings, node_id).host_end, "up")


def is_cut(settings: Settings, node_id: int) -> bool:
    """True while node `node_id`'s host end is set down (its flags lack UP)."""
    shown = _run("-o", "link", "show", node_net(settings, node_id).host_end, check=False)
    if shown.returncode != 0:
        return False
    flags = shown.stdout.partition("<")[2].partition(">")[0].split(",")
    return "UP" not in flags


def _require(settings: Settings, node_id: int) -> None:
    if not _link_exists(node_net(settings, node_id).host_end):
        raise StackError(
            f"Kafka node {node_id} has no network namespace in {settings.state_dir}: start "
            "the cluster with STREAMREC_STACK__KAFKA_NETNS=true (`streamrec up --brokers 3 "
            "--netns`)"
        )


def remove(settings: Settings) -> list[str]:
    """Delete this state dir's namespaces (their veth ends go with them) and its bridge;
    what was deleted. Harmless where there are none, or without `ip`."""
    if shutil.which("ip") is None:
        return []
    prefix = f"streamrec-{tag(settings.state_dir)}-"
    removed = []
    for namespace in sorted(n for n in _namespaces() if n.startswith(prefix)):
        _run("netns", "delete", namespace, check=False)
        removed.append(namespace)
    bridge = bridge_name(settings)
    if _link_exists(bridge):
        _run("link", "delete", bridge, check=False)
        removed.append(bridge)
    return removed
