"""The analytics sink whose embedded ClickHouse keeps failing for real: it says it is stuck
(heartbeat and /readyz), then exits with `EXIT_STUCK` with nothing committed past what it
stored, and a restarted sink stores the rest.

The failure is real: the chDB directory is replaced by a file under the running sink, so
every insert fails inside ClickHouse (CANNOT_STATVFS), as a store that went fatal does.
"""

from __future__ import annotations

import shutil

import httpx
import pytest

from streamrec.processors.analytics_sink import NAME
from streamrec.streams import metrics
from streamrec.streams.worker_process import WorkerProcess
from tests.integration.analytics import helpers
from tests.kafka_helpers import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _beat(settings, pid: int) -> metrics.WorkerBeat | None:
    return next(
        (b for b in metrics.live_workers(settings) if b.name == NAME and b.pid == pid), None
    )


def test_a_sink_whose_store_keeps_failing_says_stuck_then_exits_uncommitted(
    isolated_stack, unique, tmp_path
):
    chdb_dir = tmp_path / "clickhouse"
    settings = isolated_stack.with_overrides(
        clickhouse={"dsn": f"chdb://{chdb_dir}"},
        analytics={"sink_stuck_s": 2.0, "sink_give_up_s": 8.0, "batch_max_wait_s": 0.2},
    )
    group = f"t-stuck-{unique}"
    helpers.commit_end_offsets(settings, group)
    first, second = helpers.interactions("s1", 300), helpers.interactions("s2", 200)
    helpers.produce(settings, first)

    sink = WorkerProcess(settings, NAME, group=group).start()
    try:
        helpers.wait_caught_up(settings, group)
        beat = wait_for(lambda: _beat(settings, sink.proc.pid), 30, "the sink's heartbeat")
        ready_url = beat.metrics_url.replace("/metrics", "/readyz")
        assert httpx.get(ready_url, timeout=5).status_code == 200

        shutil.rmtree(chdb_dir)
        chdb_dir.write_text("not a directory")  # every insert now fails in ClickHouse
        helpers.produce(settings, second)

        def stuck() -> bool:
            b = _beat(settings, sink.proc.pid)
            return b is not None and b.state == "stuck"

        wait_for(stuck, 30, "the heartbeat to say stuck")
        answer = httpx.get(ready_url, timeout=5)
        assert answer.status_code == 503 and "inserts failing" in answer.json()["reason"]
        assert "inserts failing" in (_beat(settings, sink.proc.pid).reason or "")
        assert httpx.get(beat.metrics_url.replace("/metrics", "/healthz")).status_code == 200

        wait_for(lambda: not sink.alive(), 60, "the stuck sink to exit")
    finally:
        sink.stop()
    assert sink.proc.returncode == metrics.EXIT_STUCK
    assert helpers.lag_of(settings, group) == len(second)  # nothing committed past the store

    chdb_dir.unlink()  # the store is usable again: a restarted sink stores the held events
    with WorkerProcess(settings, NAME, group=group):
        helpers.wait_caught_up(settings, group)
    assert helpers.stored_interactions(settings, "s2") == helpers.expected_interactions(second)
