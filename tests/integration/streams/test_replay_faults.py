"""`streamrec replay` through a broker outage and an interruption, as a user runs it (the CLI
in a process of its own, its stderr read as a person reads it).

- Kafka stopped mid-replay: one status ("broker unreachable, retrying (N s)"), not a
  librdkafka line per connection attempt; the checkpoint never counts more than the log
  holds; once the broker is back the replay finishes with every event, each once.
- Ctrl-C mid-replay, then `--resume`: every event in the log, none lost, and the copies
  bounded by what was in flight (the events' ids are stable, so processors drop them).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import orjson
import pytest

from streamrec.infra.processes import streamrec_argv
from streamrec.streams import codecs
from streamrec.streams.admin import TopicManager
from streamrec.topics import EVENTS_INTERACTIONS
from tests.kafka_helpers import end_offsets, read_range, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _log(path: Path, unique: str, n: int) -> Path:
    rows = (
        orjson.dumps(
            {"user_id": f"u-{unique}-{i % 50}", "item_id": str(i), "ts": "2024-05-01T10:00:00Z"}
        )
        for i in range(n)
    )
    path.write_bytes(b"\n".join(rows) + b"\n")
    return path


def _replay(settings, *args: str, stderr: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        streamrec_argv("replay", *args),
        env={**settings.to_env(), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=stderr.open("wb"),
    )


def _position(checkpoint: Path) -> int:
    try:
        return int(json.loads(checkpoint.read_text())["position"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def _shown(stderr: str, outage_s: int) -> int | None:
    """The count the progress bar showed when the outage had lasted `outage_s`."""
    found = re.findall(rf"retrying \({outage_s} s\): (\d+)ev", stderr)
    return int(found[-1]) if found else None


def _ids(settings, before: dict[int, int]) -> list[str]:
    after = end_offsets(settings, EVENTS_INTERACTIONS.name)
    return [
        codecs.decode(EVENTS_INTERACTIONS, v).event_id
        for _k, v in read_range(settings, EVENTS_INTERACTIONS.name, before, after)
    ]


def test_a_broker_outage_is_one_status_and_the_replay_finishes_with_every_event(
    stack_factory, tmp_path, unique
):
    settings, manager = stack_factory()
    manager.up()
    TopicManager(settings).apply()
    n = 3000
    log = _log(tmp_path / f"{unique}.jsonl", unique, n)
    checkpoint, err = tmp_path / "cp.json", tmp_path / "stderr.txt"
    before = end_offsets(settings, EVENTS_INTERACTIONS.name)
    proc = _replay(settings, str(log), "--rate", "400", "--checkpoint", str(checkpoint), stderr=err)
    try:
        wait_for(lambda: _position(checkpoint) >= 200, 60, "the first checkpoint")
        manager.kafka.stop()
        # The outage lasts until the replay has said so for a few seconds.
        wait_for(lambda: b"retrying (7 s)" in err.read_bytes(), 60, "the outage status")
        during = json.loads(checkpoint.read_text())
        manager.kafka.start()
        assert proc.wait(timeout=120) == 0, err.read_text()
    finally:
        proc.kill()
    text = err.read_bytes().decode(errors="replace")
    assert "broker unreachable, retrying" in text
    # librdkafka's own lines ("%3|...|FAIL|...: Connect to ipv4#... failed") stay out.
    noise = [line for line in text.replace("\r", "\n").splitlines() if "|FAIL|" in line]
    assert len(noise) == 0, noise[:5]
    assert "Connect to" not in text
    # The bar counts acknowledged events: it stands still while the broker is away, though
    # the replay goes on handing events to librdkafka at 400/s.
    shown = {s: _shown(text, s) for s in (2, 6)}
    assert shown[2] is not None and shown[2] == shown[6], shown
    ids = _ids(settings, before)
    # What the checkpoint called acknowledged during the outage was in the log.
    assert during["acknowledged"] <= len(ids)
    assert sorted(set(ids)) == sorted(f"{log.name}:{i + 1}" for i in range(n))
    assert len(ids) == n  # idempotent producer: the retries wrote nothing twice
    final = json.loads(checkpoint.read_text())
    assert final["done"] and final["position"] == n


def test_an_interrupted_replay_resumes_from_where_it_stopped(stack, tmp_path, unique):
    n = 4000
    log = _log(tmp_path / f"{unique}.jsonl", unique, n)
    checkpoint = tmp_path / "cp.json"
    before = end_offsets(stack, EVENTS_INTERACTIONS.name)
    cp = ("--checkpoint", str(checkpoint))
    first = _replay(stack, str(log), "--rate", "800", *cp, stderr=tmp_path / "e1.txt")
    try:
        wait_for(lambda: _position(checkpoint) >= 800, 60, "the replay to be under way")
        first.send_signal(signal.SIGINT)
        out, _ = first.communicate(timeout=60)
    finally:
        first.kill()
    assert first.returncode == 130
    assert b"--resume" in out
    stopped_at = _position(checkpoint)
    assert 800 <= stopped_at < n

    second = _replay(stack, str(log), "--resume", *cp, stderr=tmp_path / "e2.txt")
    out, _ = second.communicate(timeout=120)
    assert second.returncode == 0, (tmp_path / "e2.txt").read_text()
    assert f"after row {stopped_at:,}".encode() in out

    ids = _ids(stack, before)
    assert set(ids) == {f"{log.name}:{i + 1}" for i in range(n)}  # none lost
    # At most the event in flight at the interrupt is produced again; the processors drop
    # such a copy by its id.
    assert len(ids) - n <= 1
    again = subprocess.run(
        streamrec_argv("replay", str(log), "--resume", *cp),
        env=stack.to_env(),
        capture_output=True,
        timeout=60,
    )
    assert b"already complete" in again.stdout
