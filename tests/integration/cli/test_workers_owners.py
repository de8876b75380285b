"""`streamrec workers --owners` against the real broker: two consumers of one group split a
topic's partitions, and the command shows both members with what each owns."""

from __future__ import annotations

import json

import pytest
from confluent_kafka import Consumer
from typer.testing import CliRunner

from streamrec.cli import app
from streamrec.streams.admin import TopicManager
from streamrec.streams.membership import librdkafka_membership
from streamrec.topics import RECS_SERVED
from tests.kafka_helpers import wait_for

pytestmark = pytest.mark.integration


def test_owners_shows_each_member_and_the_partitions_it_owns(stack, unique):
    spec = RECS_SERVED.model_copy(update={"name": f"t-owners-{unique}", "partitions": 4})
    TopicManager(stack, (spec,)).apply()
    group = f"t-owners-{unique}"
    consumers = [
        Consumer(
            {
                **stack.kafka_config(),
                **librdkafka_membership(stack, group),
                "client.id": f"owner-{i}",
                "enable.auto.commit": False,
            }
        )
        for i in range(2)
    ]
    try:
        for c in consumers:
            c.subscribe([spec.name])

        def split() -> bool:
            for c in consumers:  # both must poll for the group's rebalance to complete
                c.poll(0.1)
            owned = [{tp.partition for tp in c.assignment()} for c in consumers]
            return all(owned) and set().union(*owned) == set(range(4))

        wait_for(split, timeout_s=20, what="both consumers to own partitions")
        env = stack.to_env()
        result = CliRunner().invoke(
            app, ["workers", "--owners", "--group", group, "--json"], env=env
        )
        assert result.exit_code == 0, result.output
        (described,) = json.loads(result.output)["groups"]
        assert described["group"] == group and described["state"] == "stable"
        members = {m["client_id"]: m for m in described["members"]}
        assert set(members) == {"owner-0", "owner-1"}
        owned = [
            sorted(p["partition"] for p in m["partitions"] if p["topic"] == spec.name)
            for m in members.values()
        ]
        assert all(owned) and sorted(owned[0] + owned[1]) == [0, 1, 2, 3]
        assert all(p["lag"] is None for m in members.values() for p in m["partitions"])

        text = CliRunner().invoke(app, ["workers", "--owners", "--group", group], env=env)
        assert text.exit_code == 0, text.output
        assert f"{group}: stable, 2 members" in text.output
        assert "owner-0 on " in text.output and "owner-1 on " in text.output
        assert text.output.count(f"{spec.name}  partitions ") == 2

        idle = CliRunner().invoke(
            app, ["workers", "--owners", "--group", f"t-none-{unique}"], env=env
        )
        assert idle.exit_code == 0, idle.output
        assert idle.output.strip() == f"t-none-{unique}: no members (state dead)"
    finally:
        for c in consumers:
            c.close()
