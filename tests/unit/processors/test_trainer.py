"""The trainer's log: rows, offsets and a frame that does not depend on how partitions
interleaved; and the CPU bound it puts on its own process."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

from streamrec.processors.trainer import InteractionLog
from streamrec.streams import codecs
from streamrec.topics import EVENTS_INTERACTIONS, Interaction
from tests.unit.processors.fakes import Offsets


def _value(n: int, user: str, ts: int, rating: float | None = 4.0) -> bytes:
    event = Interaction(
        event_id=f"e{n}",
        user_id=user,
        item_id=str(n),
        rating=rating,
        ts=datetime.fromtimestamp(ts, UTC),
    )
    return codecs.encode(EVENTS_INTERACTIONS, event)


def _messages() -> list:
    made = Offsets(EVENTS_INTERACTIONS)
    return [
        made.kafka(_value(1, "a", 100), partition=0),
        made.kafka(_value(2, "b", 100), partition=1),
        made.kafka(b"not json", partition=1),
        made.kafka(_value(3, "a", 100, rating=None), partition=0),
        made.kafka(_value(4, "b", 50), partition=1),
    ]


def test_log_counts_valid_rows_and_positions_past_malformed_ones() -> None:
    log = InteractionLog()
    assert log.add(_messages()) == 4
    assert len(log) == 4 and log.malformed == 1
    assert log.positions == {0: 2, 1: 3}


def test_frame_is_the_same_whatever_the_partitions_interleaving() -> None:
    msgs = _messages()
    one, other = InteractionLog(), InteractionLog()
    one.add(msgs)
    other.add([m for m in msgs if m.partition() == 1] + [m for m in msgs if m.partition() == 0])
    a, b = one.frame(), other.frame()
    assert a.equals(b)
    assert a.item_id.tolist() == ["4", "1", "3", "2"]  # by time, then partition, then offset
    assert a.seq.tolist() == [0, 1, 2, 3]
    assert a.rating.isna().tolist() == [False, False, True, False]


def test_bound_cpu_nices_pins_and_sets_torch_threads_in_its_process() -> None:
    code = (
        "import os, threading, torch\n"
        "from streamrec.infra.settings import TrainerSettings\n"
        "from streamrec.processors.trainer import bound_cpu\n"
        "t = threading.Thread(target=threading.Event().wait, args=(5,), daemon=True)\n"
        "t.start()\n"
        "got = bound_cpu(TrainerSettings(nice=5, cpus=[0], threads=1))\n"
        "tasks = [int(x) for x in os.listdir('/proc/self/task')]\n"
        "assert all(os.getpriority(os.PRIO_PROCESS, x) >= 5 for x in tasks), tasks\n"
        "assert all(os.sched_getaffinity(x) == {0} for x in tasks)\n"
        "assert torch.get_num_threads() == 1 and got['cpus'] == [0] and got['nice'] >= 5\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
