"""The audit trail: which principal (API key, token subject, topic producer) fetched whose
recommendations, from the `principal` column of the impressions table.

`who_asked(client, database, user_id, start, end)` runs `WHO_ASKED` (docs/security.md shows
it for `clickhouse client`): one row per principal that was served this user's
recommendations in [start, end), with how many answers and the first and last time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from streamrec.analytics.schema import utc_naive

WHO_ASKED = """
SELECT principal, count() AS answers, min(served_at) AS first, max(served_at) AS last
FROM {db}.impressions FINAL
WHERE user_id = {{user:String}}
  AND served_at >= {{start:DateTime64(3, 'UTC')}} AND served_at < {{end:DateTime64(3, 'UTC')}}
GROUP BY principal
ORDER BY answers DESC, principal
"""


@dataclass(frozen=True, slots=True)
class Asker:
    principal: str  # key:<key id>, jwt:<subject>, topic:<principal>; "" with auth off
    answers: int
    first: datetime
    last: datetime


def who_asked(
    client: Any, database: str, user_id: str, start: datetime, end: datetime
) -> list[Asker]:
    rows = client.query(
        WHO_ASKED.format(db=database),
        parameters={"user": user_id, "start": utc_naive(start), "end": utc_naive(end)},
    ).result_rows
    return [Asker(str(p), int(n), first, last) for p, n, first, last in rows]
