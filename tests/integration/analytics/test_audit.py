"""The audit trail end to end: impressions with their principal go through recs.served and the
real analytics sink (a worker process) into ClickHouse, where "which key fetched this user's
recommendations yesterday" is one query (`analytics.audit.WHO_ASKED`, docs/security.md)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from streamrec.analytics.audit import who_asked
from streamrec.analytics.store import store_session
from streamrec.processors.analytics_sink import NAME
from streamrec.serving.answer import Answer
from streamrec.serving.impressions import ImpressionPublisher
from streamrec.serving.metrics import ServingMetrics
from streamrec.streams.worker_process import WorkerProcess
from streamrec.topics import Impression
from tests.integration.analytics import helpers

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _shown(n: int, user: str, principal: str, at: datetime) -> list[Impression]:
    return [
        Impression(
            event_id=f"audit-{principal}-{user}-{at:%H%M}-{i}",
            request_id=f"r{i}",
            user_id=user,
            item_ids=["it1"],
            level="FULL",
            latency_ms=1.0,
            served_at=at + timedelta(minutes=i),
            principal=principal,
        )
        for i in range(n)
    ]


def test_which_key_fetched_this_users_recommendations_yesterday(isolated_stack, unique):
    settings = isolated_stack
    today = datetime.combine(datetime.now(UTC).date(), time(), UTC)
    yesterday = today - timedelta(days=1)
    user, other = f"audit-{unique}", f"audit-{unique}-x"
    helpers.produce(
        settings,
        [
            *_shown(3, user, "key:aaa", yesterday + timedelta(hours=9)),
            *_shown(1, user, "jwt:svc-b", yesterday + timedelta(hours=20)),
            *_shown(2, user, "key:ccc", yesterday - timedelta(hours=1)),  # the day before
            *_shown(2, other, "key:ddd", yesterday + timedelta(hours=10)),  # another user
        ],
    )
    # Today's answer, through the serving path's own publisher: the principal it was given.
    publisher = ImpressionPublisher(settings, ServingMetrics())
    publisher.publish(
        Answer("r-now", user, ["it2"], [1.0], [None], "FULL", None, 1.0, datetime.now(UTC)),
        "http",
        "key:eee",
    )
    publisher.close()

    group = f"t-audit-{unique}"
    with WorkerProcess(settings, NAME, group=group):
        helpers.wait_caught_up(settings, group)
    with store_session(settings) as client:
        asked = who_asked(client, settings.clickhouse.database, user, yesterday, today)
        now = who_asked(client, settings.clickhouse.database, user, today, today + timedelta(1))
    assert [(a.principal, a.answers) for a in asked] == [("key:aaa", 3), ("jwt:svc-b", 1)]
    assert asked[0].first == (yesterday + timedelta(hours=9)).replace(tzinfo=None) or (
        asked[0].first.replace(tzinfo=UTC) == yesterday + timedelta(hours=9)
    )
    assert [(a.principal, a.answers) for a in now] == [("key:eee", 1)]
