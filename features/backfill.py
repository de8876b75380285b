"""`streamrec backfill features`: every feature recomputed from the whole log, point in time.

Responsibilities:
- read events.interactions directly (all partitions, first offset to the current end, no
  consumer group) and catalog.items (genres, years);
- replay each user's events, in the order the session processor sees them, through the same
  `features.session.apply_event`, so the offline history equals what the stream computed;
- write the offline Parquet files of the Feast repo, each row stamped with the event time
  from which it holds, so `get_historical_features` joins them point-in-time correctly:
  - `user_session.parquet`: the session features after each accepted event (one row per
    user and event time: same-instant events keep the state after the last of them);
  - `user_longterm.parquet`: one row per user per UTC day of activity, stamped at the end of
    that day (a label at time t sees only days that ended before t: no leakage);
  - `item.parquet`: catalog genres and year, stamped at the epoch (static metadata);
  - `item_popularity.parquet`: per item and hour end E, the counts in [E-1h, E) and
    [E-24h, E), for the hours when the item had interactions in the last 24 h;
- optionally write the latest row of the user and item views to the online store (a cold
  start of Redis); current popularity is the trending processor's.

Each file is written to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from streamrec.features.catalog import CatalogGenres
from streamrec.features.errors import BackfillError
from streamrec.features.feast_store import offline_dir
from streamrec.features.feature_repo.definitions import TIMESTAMP_FIELD
from streamrec.features.log_reader import read_topic
from streamrec.features.online_writer import OnlineWriter, frame
from streamrec.features.session import GENRE_INDEX, Outcome, SessionState, apply_event, ts_ms
from streamrec.infra.settings import FeatureSettings, Settings
from streamrec.streams import codecs
from streamrec.streams.sources.movielens import GENRES
from streamrec.topics import EVENTS_INTERACTIONS, Interaction
from streamrec.topics.errors import SchemaError

DAY_MS = 86_400_000
HOUR_MS = 3_600_000


@dataclass
class BackfillReport:
    events: int = 0
    accepted: int = 0
    duplicates: int = 0
    too_late: int = 0
    malformed: int = 0
    users: int = 0
    items: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    online_rows: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        files = ", ".join(f"{name}: {n:,} rows" for name, n in self.rows.items())
        return (
            f"backfill: {self.events:,} events read ({self.accepted:,} accepted, "
            f"{self.duplicates:,} duplicates, {self.too_late:,} too late, {self.malformed:,} "
            f"malformed), {self.users:,} users, {self.items:,} catalog items; {files}; "
            f"{self.online_rows:,} rows to the online store; {self.seconds:.1f} s"
        )


def top_genres(counts: Counter[int], n: int) -> list[str]:
    """The n most frequent genres (ties: dataset order)."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [GENRES[i] for i, _c in ranked[:n]]


class UserHistory:
    """Long-term aggregates of one user, snapshotted per day of activity."""

    __slots__ = ("day", "genre_counts", "rating_n", "rating_sum", "total")

    def __init__(self) -> None:
        self.total = 0
        self.rating_sum = 0.0
        self.rating_n = 0
        self.genre_counts: Counter[int] = Counter()
        self.day: int | None = None

    def snapshot(self, user_id: str, cfg: FeatureSettings) -> dict[str, Any]:
        assert self.day is not None
        return {
            "user_id": user_id,
            "total_interactions": self.total,
            "top_genres": top_genres(self.genre_counts, cfg.top_genres),
            "mean_rating": self.rating_sum / self.rating_n if self.rating_n else 0.0,
            TIMESTAMP_FIELD: (self.day + 1) * DAY_MS,  # the end of the day it describes
        }


def _events(settings: Settings, report: BackfillReport) -> Iterable[Interaction]:
    for _p, _offset, _key, value in read_topic(settings, EVENTS_INTERACTIONS.name):
        report.events += 1
        try:
            event = codecs.decode(EVENTS_INTERACTIONS, value)
        except SchemaError:
            report.malformed += 1  # the processors dead-letter these; nothing to recompute
            continue
        assert isinstance(event, Interaction)
        yield event


def compute(
    settings: Settings,
    events: Iterable[Interaction],
    catalog: CatalogGenres,
    report: BackfillReport,
) -> dict[str, pd.DataFrame]:
    cfg = settings.features
    states: dict[str, SessionState] = {}
    histories: dict[str, UserHistory] = {}
    session_rows: list[dict[str, Any]] = []
    longterm_rows: list[dict[str, Any]] = []
    item_events: list[tuple[str, int]] = []
    for ev in events:
        state = states.setdefault(ev.user_id, SessionState())
        ts = ts_ms(ev.ts.timestamp())
        genres = catalog.get(ev.item_id)
        outcome = apply_event(
            state,
            cfg,
            event_id=ev.event_id,
            ts=ts,
            item_id=ev.item_id,
            genres=genres,
            rating=ev.rating,
        )
        if outcome is Outcome.DUPLICATE:
            report.duplicates += 1
            continue
        if outcome is Outcome.TOO_LATE:
            report.too_late += 1
            continue
        report.accepted += 1
        session_rows.append(
            {"user_id": ev.user_id, **state.features(), TIMESTAMP_FIELD: state.max_ts}
        )
        item_events.append((ev.item_id, ts))
        hist = histories.setdefault(ev.user_id, UserHistory())
        day = ts // DAY_MS
        if hist.day is not None and day > hist.day:
            longterm_rows.append(hist.snapshot(ev.user_id, cfg))
        hist.day = day if hist.day is None else max(hist.day, day)
        hist.total += 1
        if ev.rating is not None:
            hist.rating_sum += ev.rating
            hist.rating_n += 1
        for g in genres:
            if g in GENRE_INDEX:
                hist.genre_counts[GENRE_INDEX[g]] += 1
    for user_id, hist in histories.items():
        longterm_rows.append(hist.snapshot(user_id, cfg))
    report.users = len(states)
    return {
        # Rows of one user at one instant are indistinguishable to a point-in-time join:
        # keep the last (the state after all of that instant's events).
        "user_session": frame(session_rows).drop_duplicates(
            ["user_id", TIMESTAMP_FIELD], keep="last"
        )
        if session_rows
        else None,
        "user_longterm": frame(longterm_rows) if longterm_rows else None,
        "item": _item_frame(catalog),
        "item_popularity": _popularity_frame(item_events),
    }


def _item_frame(catalog: CatalogGenres) -> pd.DataFrame | None:
    if not catalog.genres:
        return None
    rows = [
        {
            "item_id": item,
            "genres": list(genres),
            "year": catalog.years.get(item) or 0,
            TIMESTAMP_FIELD: 0,
        }
        for item, genres in catalog.genres.items()
    ]
    return frame(rows)


def _popularity_frame(item_events: list[tuple[str, int]]) -> pd.DataFrame | None:
    """Hourly windowed counts per item (rows only where the 24 h count is not zero)."""
    if not item_events:
        return None
    items, ts = zip(*item_events, strict=True)
    df = pd.DataFrame({"item_id": items, "hour": np.asarray(ts, dtype=np.int64) // HOUR_MS})
    per_hour = df.groupby(["item_id", "hour"]).size().rename("n").reset_index()
    out = []
    for item_id, g in per_hour.groupby("item_id", sort=False):
        hours = g["hour"].to_numpy()
        counts = g["n"].to_numpy()
        # Window ends E (hour boundaries) at which the item is in a 24 h window: E in (h, h+24].
        ends = np.unique((hours[:, None] + np.arange(1, 25)[None, :]).ravel())
        c24 = np.zeros(len(ends), dtype=np.int64)
        c1 = np.zeros(len(ends), dtype=np.int64)
        for h, n in zip(hours, counts, strict=True):
            lo, hi = np.searchsorted(ends, [h + 1, h + 25])
            c24[lo:hi] += n
            c1[np.searchsorted(ends, h + 1)] += n
        out.append(
            pd.DataFrame(
                {
                    "item_id": item_id,
                    "count_1h": c1,
                    "count_24h": c24,
                    "window_end_ms": ends * HOUR_MS,
                    TIMESTAMP_FIELD: ends * HOUR_MS,
                }
            )
        )
    result = pd.concat(out, ignore_index=True)
    result[TIMESTAMP_FIELD] = pd.to_datetime(result[TIMESTAMP_FIELD], unit="ms", utc=True)
    return result


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_suffix(".parquet.part")
    df.to_parquet(tmp, index=False)
    tmp.replace(path)


def run_backfill(settings: Settings, write_online: bool = True) -> BackfillReport:
    t0 = time.monotonic()
    report = BackfillReport()
    catalog = CatalogGenres(settings)
    report.items = catalog.load()
    catalog.stop()
    frames = compute(settings, _events(settings, report), catalog, report)
    out_dir = offline_dir(settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, df in frames.items():
        if df is None:
            continue
        try:
            _write_parquet(df, out_dir / f"{name}.parquet")
        except OSError as exc:
            raise BackfillError(f"cannot write {out_dir / name}.parquet: {exc}") from exc
        report.rows[name] = len(df)
    if write_online:
        writer = OnlineWriter(settings)
        for name, key in (
            ("user_session", "user_id"),
            ("user_longterm", "user_id"),
            ("item", "item_id"),
        ):  # item_popularity online is the trending processor's (the current windows)
            df = frames[name]
            if df is None:
                continue
            latest = df.sort_values(TIMESTAMP_FIELD, kind="stable").groupby(key).tail(1)
            records = latest.to_dict("records")
            for r in records:
                r[TIMESTAMP_FIELD] = int(r[TIMESTAMP_FIELD].value // 1_000_000)
            for start in range(0, len(records), 1000):
                writer.write(f"{name}_fv", records[start : start + 1000])
            report.online_rows += len(records)
    report.seconds = time.monotonic() - t0
    return report
