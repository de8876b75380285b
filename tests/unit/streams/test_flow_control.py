"""The streams' flow control keeps what the consumer delivered while the flow was running.

faust calls `app.flow_control.resume()` more than once per rebalance: when the recovery
starts (after the revoke suspended the flow) and again when it completes, after it has
resumed and sought the assigned partitions. mode's `FlowControlEvent.resume` clears every
stream queue on each call, so the second call dropped the records delivered during the
seek: never processed, never acked, never fetched again. The session worker's commits then
stopped at the first of them and, once the stall watchdog sought back, they came too late
to count (the kill/restart loss of ADRs 0085/0086).
"""

from __future__ import annotations

from pathlib import Path

from streamrec.infra.settings import Settings
from streamrec.streams.app import create_app
from streamrec.streams.rebalance_guard import KeepDeliveredFlowControl


def _app_and_queue(tmp_path: Path):
    app = create_app(Settings().with_overrides(stack={"state_dir": tmp_path}), "t-flow")
    # A stream's queue, as faust makes it: cleared when the flow is resumed.
    return app, app.channel(maxsize=10).queue


def test_apps_get_the_flow_control_that_keeps_delivered_records(tmp_path):
    app, _queue = _app_and_queue(tmp_path)
    assert isinstance(app.flow_control, KeepDeliveredFlowControl)


def test_resuming_a_running_flow_keeps_the_records_delivered_meanwhile(tmp_path):
    app, queue = _app_and_queue(tmp_path)
    app.flow_control.resume()  # recovery starts: the flow runs
    queue.put_nowait("delivered while the recovery's seek was under way")
    app.flow_control.resume()  # recovery completes
    assert queue.qsize() == 1
    assert app.flow_control.is_active()


def test_resuming_a_suspended_flow_still_drops_what_the_revoke_left_queued(tmp_path):
    app, queue = _app_and_queue(tmp_path)
    app.flow_control.resume()
    app.flow_control.suspend()  # a rebalance revokes partitions
    queue.put_nowait("a record of the previous assignment")
    app.flow_control.resume()
    assert queue.empty()
    assert app.flow_control.is_active()
