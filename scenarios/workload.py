"""A synthetic audience for the scenarios: who asks for recommendations when, and what they click.

Pure and deterministic for a seed (no I/O, no clock): the runner turns its output into HTTP
requests and `topics.Interaction` events.

- `Catalog`: items ranked by popularity; an item's draw probability is Zipf over that rank
  (`p ~ 1 / rank**zipf_s`); new uploads join at the tail, and the viral item jumps to rank 1
  at `viral_at_s`;
- `daily_multiplier`: the arrival rate over a compressed day (`day_s` seconds of wall time for
  24 hours): 1 outside the evening, `peak_factor` at 20:00 (a Gaussian bump two hours wide);
- `Workload.requests`: session starts as a non-homogeneous Poisson process (thinning) under
  that curve, each session a few requests apart by `think_s`;
- `ClickModel`: a position-based model, P(click) = examine(rank) x attract(user, item), where
  attract grows with the genre affinity between user and item and with the item's appeal.
  A list that puts suitable items near the top therefore really earns more clicks, which is
  what lets a scenario compare recommendation quality by clicks per second.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from streamrec.topics import CatalogItem, Interaction

# Items the workload makes carry this time; the runner stamps them as it publishes them.
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
PEAK_HOUR = 20.0
PEAK_WIDTH_H = 2.0
SOURCE = "scenario"


class WorkloadConfig(BaseModel):
    """The audience's shape; every field has a default that suits a two-minute run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    users: int = Field(300, ge=1, description="synthetic users (ids are ML-100K's: 1..943)")
    zipf_s: float = Field(1.0, gt=0, description="exponent of item popularity over its rank")
    day_s: float = Field(120.0, gt=0, description="wall seconds one compressed day lasts")
    start_hour: float = Field(16.0, ge=0, lt=24, description="the hour the run starts at")
    peak_factor: float = Field(3.0, ge=1, description="evening rate over the daytime rate")
    sessions_per_s: float = Field(5.0, gt=0, description="session starts per s at rate 1x")
    requests_per_session: int = Field(4, ge=1, description="mean requests of one session")
    think_s: float = Field(2.0, gt=0, description="mean gap between a session's requests")
    uploads_every_s: float = Field(20.0, gt=0, description="a new item this often")
    viral_at_s: float | None = Field(30.0, description="when the viral item appears; None: never")
    examine_decay: float = Field(0.8, gt=0, description="examine(rank) = 1 / (1 + rank)**decay")
    base_attract: float = Field(0.02, ge=0, le=1)
    affinity_weight: float = Field(0.5, ge=0, description="attraction per unit of affinity")
    appeal_weight: float = Field(0.1, ge=0, description="attraction per unit of item appeal")
    viral_appeal: float = Field(3.0, ge=0, description="the viral item's appeal (others <= 1)")
    affinity_concentration: float = Field(
        0.3, gt=0, description="Dirichlet concentration of users' genre tastes (low: focused)"
    )


@dataclass(frozen=True, slots=True)
class Item:
    item_id: str
    genres: tuple[str, ...]
    appeal: float  # in [0, 1] for catalog items: 1 for the most popular


@dataclass
class Catalog:
    """Items in popularity order (most popular first) with their Zipf draw weights."""

    items: list[Item]
    zipf_s: float = 1.0
    _by_id: dict[str, Item] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_id = {i.item_id: i for i in self.items}

    @classmethod
    def from_items(
        cls, items: Sequence[CatalogItem], popularity: Mapping[str, int], zipf_s: float = 1.0
    ) -> Catalog:
        ranked = sorted(items, key=lambda i: (-popularity.get(i.item_id, 0), i.item_id))
        n = len(ranked)
        return cls(
            [Item(i.item_id, tuple(i.genres), 1.0 - r / max(1, n)) for r, i in enumerate(ranked)],
            zipf_s,
        )

    def get(self, item_id: str) -> Item | None:
        return self._by_id.get(item_id)

    def genres(self) -> list[str]:
        return sorted({g for i in self.items for g in i.genres})

    def weights(self) -> np.ndarray:
        ranks = np.arange(1, len(self.items) + 1, dtype=float)
        w = ranks**-self.zipf_s
        return w / w.sum()

    def add(self, item: Item, first: bool = False) -> None:
        """A new item: at the tail (an upload) or at rank 1 (gone viral)."""
        self.items = [item, *self.items] if first else [*self.items, item]
        self._by_id[item.item_id] = item


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    taste: Mapping[str, float]  # genre -> weight, summing to 1

    def affinity(self, genres: Iterable[str]) -> float:
        """How well the item's genres suit the user, in [0, 1]."""
        return min(1.0, sum(self.taste.get(g, 0.0) for g in set(genres)))


def daily_multiplier(t_s: float, day_s: float, start_hour: float, peak_factor: float) -> float:
    """The arrival rate at `t_s` over the daytime rate: 1 by day, `peak_factor` at 20:00."""
    hour = (start_hour + 24.0 * t_s / day_s) % 24.0
    distance = min(abs(hour - PEAK_HOUR), 24.0 - abs(hour - PEAK_HOUR))  # the day wraps
    return 1.0 + (peak_factor - 1.0) * math.exp(-0.5 * (distance / PEAK_WIDTH_H) ** 2)


def hour_at(t_s: float, day_s: float, start_hour: float) -> float:
    return (start_hour + 24.0 * t_s / day_s) % 24.0


@dataclass(frozen=True, slots=True)
class Request:
    t_s: float  # since the start of the run
    user_id: str
    session_id: str
    seq: int  # the request's place in its session


@dataclass(frozen=True, slots=True)
class CatalogEvent:
    t_s: float
    item: CatalogItem
    viral: bool = False


@dataclass(frozen=True, slots=True)
class Click:
    user_id: str
    item_id: str
    rank: int


class ClickModel:
    """Position-based clicks: examine(rank) x attract(user, item), one draw per item shown."""

    def __init__(self, cfg: WorkloadConfig, catalog: Catalog) -> None:
        self.cfg = cfg
        self.catalog = catalog

    def examine(self, rank: int) -> float:
        return 1.0 / (1.0 + rank) ** self.cfg.examine_decay

    def attract(self, user: User, item_id: str) -> float:
        item = self.catalog.get(item_id)
        if item is None:  # not in the audience's catalog: only the base attraction
            return self.cfg.base_attract
        c = self.cfg
        value = c.base_attract + c.affinity_weight * user.affinity(item.genres)
        return min(1.0, value + c.appeal_weight * item.appeal)

    def probability(self, user: User, item_id: str, rank: int) -> float:
        return self.examine(rank) * self.attract(user, item_id)

    def clicks(self, user: User, ranked: Sequence[str], rng: np.random.Generator) -> list[Click]:
        draws = rng.random(len(ranked))
        return [
            Click(user.user_id, item_id, rank)
            for rank, (item_id, u) in enumerate(zip(ranked, draws, strict=True))
            if u < self.probability(user, item_id, rank)
        ]


def make_users(
    cfg: WorkloadConfig,
    genres: Sequence[str],
    history: Mapping[str, Sequence[Sequence[str]]] | None = None,
) -> list[User]:
    """`cfg.users` users with ids "1".."n". With a `history` (user -> the genres of each item
    they rated), a user's taste is the genre shares of what they rated, smoothed a little;
    otherwise a Dirichlet draw (focused on a few genres at a low concentration)."""
    rng = np.random.default_rng([cfg.seed, 1])
    users = []
    for n in range(1, cfg.users + 1):
        user_id = str(n)
        rated = (history or {}).get(user_id)
        if rated:
            counts = dict.fromkeys(genres, 0.1)
            for item_genres in rated:
                for g in item_genres:
                    if g in counts:
                        counts[g] += 1.0
            weights = np.array([counts[g] for g in genres])
        else:
            weights = rng.dirichlet([cfg.affinity_concentration] * len(genres))
        weights = weights / weights.sum()
        users.append(User(user_id, dict(zip(genres, weights.tolist(), strict=True))))
    return users


class Workload:
    """The run's arrivals and catalog events, drawn once from the seed."""

    def __init__(self, cfg: WorkloadConfig, catalog: Catalog, users: Sequence[User]) -> None:
        self.cfg = cfg
        self.catalog = catalog
        self.users = list(users)
        self.by_id = {u.user_id: u for u in self.users}
        self.clicks = ClickModel(cfg, catalog)
        # Users are active by Zipf too: a few heavy users, a long tail.
        ranks = np.arange(1, len(self.users) + 1, dtype=float)
        self._user_p = ranks**-0.8 / (ranks**-0.8).sum()

    def rate(self, t_s: float) -> float:
        """Session starts per second at `t_s`."""
        c = self.cfg
        return c.sessions_per_s * daily_multiplier(t_s, c.day_s, c.start_hour, c.peak_factor)

    def request_rate(self, t_s: float) -> float:
        """Requests per second expected at `t_s` (sessions in full swing)."""
        return self.rate(t_s) * self.cfg.requests_per_session

    def mean_request_rate(self, duration_s: float) -> float:
        grid = np.linspace(0.0, duration_s, 200, endpoint=False)
        return float(np.mean([self.request_rate(t) for t in grid]))

    def requests(self, duration_s: float, scale: float = 1.0) -> list[Request]:
        """Every request of the run, by time. `scale` multiplies the session rate (a scenario
        sets its load by it, the curve's shape unchanged). Sessions start from before 0, so
        the run begins with sessions in full swing rather than ramping up."""
        c = self.cfg
        rng = np.random.default_rng([c.seed, 2])
        top = c.sessions_per_s * c.peak_factor * scale  # the thinning bound
        out: list[Request] = []
        warm_s = 3.0 * c.think_s * c.requests_per_session
        t, n = -warm_s, 0
        while True:
            t += rng.exponential(1.0 / top)
            if t >= duration_s:
                break
            if rng.random() * top > self.rate(t) * scale:
                continue
            user = self.users[int(rng.choice(len(self.users), p=self._user_p))]
            session = f"{c.seed}-{n}"
            n += 1
            at = t
            for seq in range(1 + int(rng.poisson(c.requests_per_session - 1))):
                if at >= duration_s:
                    break
                if at >= 0.0:
                    out.append(Request(at, user.user_id, session, seq))
                at += rng.exponential(c.think_s)
        out.sort(key=lambda r: (r.t_s, r.session_id, r.seq))
        return out

    def catalog_events(self, duration_s: float) -> list[CatalogEvent]:
        """New uploads every `uploads_every_s`, and the viral item at `viral_at_s`."""
        c = self.cfg
        rng = np.random.default_rng([c.seed, 3])
        genres = self.catalog.genres() or ["Drama"]
        events = []
        k = 1
        while k * c.uploads_every_s < duration_s:
            picks = sorted(set(rng.choice(genres, size=2).tolist()))
            item = CatalogItem(
                item_id=f"upload-{c.seed}-{k}",
                title=f"New upload {k}",
                year=2026,
                genres=picks,
                updated_at=EPOCH,
            )
            events.append(CatalogEvent(k * c.uploads_every_s, item))
            k += 1
        if c.viral_at_s is not None and c.viral_at_s < duration_s:
            item = CatalogItem(
                item_id=f"viral-{c.seed}",
                title="The Viral One",
                year=2026,
                genres=["Drama"],
                updated_at=EPOCH,
            )
            events.append(CatalogEvent(c.viral_at_s, item, viral=True))
        return sorted(events, key=lambda e: e.t_s)

    def apply(self, event: CatalogEvent) -> None:
        """The catalog event enters the audience's catalog (the viral one at rank 1)."""
        appeal = self.cfg.viral_appeal if event.viral else 0.0
        self.catalog.add(Item(event.item.item_id, tuple(event.item.genres), appeal), event.viral)

    def organic_views(self, n: int, rng: np.random.Generator) -> list[str]:
        """Items users find without a recommendation: drawn by Zipf popularity."""
        picks = rng.choice(len(self.catalog.items), size=n, p=self.catalog.weights())
        return [self.catalog.items[int(i)].item_id for i in picks]


def to_interaction(click: Click, ts: datetime, event_id: str) -> Interaction:
    """A click as the events.interactions contract has it."""
    return Interaction(
        event_id=event_id,
        user_id=click.user_id,
        item_id=click.item_id,
        kind="click",
        ts=ts,
        source=SOURCE,
    )
