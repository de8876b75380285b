"""`streamrec workers`: the plain list needs no broker; `--owners` without one is one line of
error and a non-zero exit, without librdkafka's connection log; a command that reads Redis
without one is one line of error too."""

from __future__ import annotations

import os
import subprocess
import sys

from typer.testing import CliRunner

from streamrec.cli import app
from streamrec.infra.processes import free_port
from streamrec.processors.registry import WORKERS
from streamrec.streams.owners import GroupOwners, Member, OwnedPartition, render


def test_the_plain_list_works_offline():
    result = CliRunner().invoke(app, ["workers"])
    assert result.exit_code == 0, result.output
    assert [line.split("\t")[0] for line in result.output.splitlines()] == sorted(WORKERS)


def test_owners_without_a_broker_is_one_line_and_a_failure(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
    env |= {
        "STREAMREC_STACK__KAFKA_PORT": str(free_port()),
        "STREAMREC_STACK__STATE_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "streamrec", "workers", "--owners", "--timeout", "0.5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: cannot reach Kafka at 127.0.0.1:")
    assert "is the stack up?" in lines[0]


def test_the_text_shows_members_their_partitions_and_lag_and_empty_groups():
    groups = [
        GroupOwners(
            group="streamrec-trending",
            state="stable",
            members=[
                Member(
                    member_id="m-1",
                    client_id="faust-1",
                    host="/10.0.0.7",
                    instance_id="streamrec-trending:pod-0:0",
                    partitions=[
                        OwnedPartition(topic="events.interactions", partition=0, lag=3),
                        OwnedPartition(topic="events.interactions", partition=1, lag=None),
                    ],
                )
            ],
        ),
        GroupOwners(group="streamrec-serving", state="empty", members=[]),
    ]
    assert render(groups) == [
        "streamrec-trending: stable, 1 member, lag 3",
        "  faust-1 on /10.0.0.7, static streamrec-trending:pod-0:0 (m-1)",
        "    events.interactions  partitions 0 1  lag 3 -",
        "streamrec-serving: no members (state empty)",
    ]


def test_a_command_that_reads_redis_without_one_is_one_line_and_a_failure(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
    env |= {
        "STREAMREC_STACK__REDIS_PORT": str(free_port()),
        "STREAMREC_STACK__STATE_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "streamrec", "models", "shadow-report"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: Redis did not answer (")
    assert "is the stack up?" in lines[0]
