"""How every consumer joins its group: a short session timeout and, given a slot, static
membership, so that a killed worker's restart does not wait for the group.

A worker killed with SIGKILL never leaves its group. Its replacement joins, and the
coordinator waits for the dead member's session to expire before it reassigns: with Faust's
default `broker_session_timeout` (60 s) the restarted worker processed nothing for about a
minute. Two settings bound that (figures in BENCHMARKS.md, "Rejoin after kill -9"):

- `kafka.session_timeout_s` (10 s): a dead member is dropped after this, so any restart
  or takeover waits at most about this long. The broker's `group.min.session.timeout.ms`
  (6 s) is the floor.
- `kafka.member_slot`: the process's stable slot (a pod ordinal, a systemd instance name).
  With it, consumers join as static members, `group.instance.id` = GROUP:HOST:SLOT: a
  restarted process rejoins as the member it was, and the coordinator hands its partitions
  straight back, without a rebalance. Two live processes of one group must never share a
  slot on one host (the broker fences the older one). A static member does not leave its
  group on a clean stop either, so another member takes its partitions over only after
  the session timeout.

A client waits `kafka.request_timeout_s` (15 s) for a broker's answer before it gives up
on that connection and asks another: a broker cut off the network never answers, and the
libraries' defaults (librdkafka 60 s, Faust 90 s) stall its consumers that long.

`librdkafka_membership` gives the confluent-kafka consumer keys, `faust_membership` the
Faust (aiokafka) settings; `streams.app.create_app` and every plain consumer use them.
"""

from __future__ import annotations

import socket
from typing import Any

from streamrec.infra.settings import Settings


def group_instance_id(settings: Settings, group: str) -> str | None:
    """The static member id of this process in `group`, or None (dynamic membership)."""
    slot = settings.kafka.member_slot
    if not slot:
        return None
    # group.instance.id allows at most 249 characters of [a-zA-Z0-9._-] and more; keep it
    # readable and bounded.
    return f"{group}:{socket.gethostname()}:{slot}"[:249]


def heartbeat_s(settings: Settings) -> float:
    # A third of the session, as Kafka recommends, so two lost heartbeats are survivable.
    return min(3.0, settings.kafka.session_timeout_s / 3)


def librdkafka_membership(settings: Settings, group: str) -> dict[str, Any]:
    """confluent-kafka consumer keys for joining `group`."""
    config: dict[str, Any] = {
        "group.id": group,
        "session.timeout.ms": int(settings.kafka.session_timeout_s * 1000),
        "heartbeat.interval.ms": int(heartbeat_s(settings) * 1000),
    }
    instance = group_instance_id(settings, group)
    if instance:
        config["group.instance.id"] = instance
    return config


def faust_request_timeout_s(settings: Settings) -> float:
    """aiokafka's consumer request timeout: `kafka.request_timeout_s`, but never below the
    session timeout (Faust refuses that) plus a margin for the heartbeat that ends it."""
    k = settings.kafka
    return max(k.request_timeout_s, k.session_timeout_s + 5.0)


def faust_membership(settings: Settings, group: str) -> dict[str, Any]:
    """Faust app settings for joining `group` (its app id)."""
    return {
        # Faust's default (90 s) leaves a fetch, heartbeat or commit sent to a broker cut off
        # the network pending for that long before the consumer asks another one.
        "broker_request_timeout": faust_request_timeout_s(settings),
        "broker_session_timeout": settings.kafka.session_timeout_s,
        "broker_heartbeat_interval": heartbeat_s(settings),
        "consumer_group_instance_id": group_instance_id(settings, group),
    }
