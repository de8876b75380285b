"""Which process of a consumer group owns which partitions, read from the broker.

`streamrec workers --owners` shows it: for each group, its state and its members (client id,
host, `group.instance.id` when static) with their assigned partitions and each partition's
lag (end offset minus the group's committed offset, `streams.lag`). The AdminClient
(`describe_consumer_groups`) reads it from the group coordinator, so it works for Faust and
plain confluent-kafka consumers alike, without asking the workers.
"""

from __future__ import annotations

import logging

from confluent_kafka import KafkaException
from pydantic import BaseModel, ConfigDict

from streamrec.infra.settings import Settings
from streamrec.streams.errors import LagError
from streamrec.streams.lag import admin_client, partition_lags
from streamrec.streams.login import LoginWatch

# librdkafka logs every failed connection attempt (several a second) to stderr; an
# unreachable broker is reported once, as the error below.
_QUIET = logging.getLogger("streamrec.owners.librdkafka")
_QUIET.setLevel(logging.CRITICAL + 1)
_QUIET.propagate = False


class OwnersError(LagError):
    """The broker could not be reached or could not describe a group."""


class OwnedPartition(BaseModel):
    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    lag: int | None = None  # None: the group has not committed an offset for it


class Member(BaseModel):
    model_config = ConfigDict(frozen=True)

    member_id: str
    client_id: str
    host: str
    instance_id: str | None = None  # group.instance.id of a static member
    partitions: list[OwnedPartition]


class GroupOwners(BaseModel):
    model_config = ConfigDict(frozen=True)

    group: str
    state: str
    members: list[Member]

    @property
    def lag(self) -> int:
        return sum(p.lag or 0 for m in self.members for p in m.partitions)


def describe_owners(
    settings: Settings, groups: list[str], timeout_s: float = 5.0
) -> list[GroupOwners]:
    """`groups` as the coordinator has them (a group that does not exist is `dead`, with no
    members); `OwnersError` when no broker answers within `timeout_s`."""
    login = LoginWatch()
    admin = admin_client(settings, error_cb=login, logger=_QUIET)
    try:
        admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        refused = login.explain(admin, settings.kafka.username)
        error = exc.args[0] if exc.args else exc
        text = error.str() if hasattr(error, "str") else str(error)
        why = refused or f"no broker answered within {timeout_s:g} s ({text})"
        raise OwnersError(
            f"cannot reach Kafka at {settings.kafka_bootstrap}: {why}; is the stack up? "
            "(streamrec up)"
        ) from None
    if not groups:
        return []
    futures = admin.describe_consumer_groups(groups, request_timeout=timeout_s)
    out = []
    for group in groups:
        try:
            desc = futures[group].result()
        except KafkaException as exc:
            raise OwnersError(f"cannot describe consumer group {group}: {exc}") from None
        assigned = {
            (tp.topic, tp.partition)
            for m in desc.members
            for tp in (m.assignment.topic_partitions if m.assignment else [])
        }
        lags = partition_lags(admin, group, assigned, timeout_s) if assigned else {}
        members = [
            Member(
                member_id=m.member_id,
                client_id=m.client_id,
                host=m.host,
                instance_id=m.group_instance_id or None,
                partitions=sorted(
                    (
                        OwnedPartition(
                            topic=tp.topic,
                            partition=tp.partition,
                            lag=lags.get((tp.topic, tp.partition)),
                        )
                        for tp in (m.assignment.topic_partitions if m.assignment else [])
                    ),
                    key=lambda p: (p.topic, p.partition),
                ),
            )
            for m in desc.members
        ]
        members.sort(key=lambda m: (m.host, m.client_id, m.member_id))
        state = getattr(desc.state, "name", str(desc.state)).lower()
        out.append(GroupOwners(group=group, state=state, members=members))
    return out


def render(groups: list[GroupOwners]) -> list[str]:
    """The text `streamrec workers --owners` prints: a group per block, a member per line,
    and each of its topics with the partitions it owns and their lag (- : none committed)."""
    lines: list[str] = []
    for g in groups:
        if not g.members:
            lines.append(f"{g.group}: no members (state {g.state})")
            continue
        count = len(g.members)
        lines.append(f"{g.group}: {g.state}, {count} member{'s' * (count != 1)}, lag {g.lag}")
        for m in g.members:
            static = f", static {m.instance_id}" if m.instance_id else ""
            lines.append(f"  {m.client_id} on {m.host}{static} ({m.member_id})")
            if not m.partitions:
                lines.append("    no partitions assigned")
            by_topic: dict[str, list[OwnedPartition]] = {}
            for p in m.partitions:
                by_topic.setdefault(p.topic, []).append(p)
            for topic, parts in by_topic.items():
                numbers = " ".join(str(p.partition) for p in parts)
                lag = " ".join("-" if p.lag is None else str(p.lag) for p in parts)
                lines.append(f"    {topic}  partitions {numbers}  lag {lag}")
    return lines
