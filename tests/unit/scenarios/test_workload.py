"""The scenarios' audience: deterministic for a seed, Zipf popularity, the evening peak, and a
click model under which better-ranked, better-suited items really earn more clicks."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pytest

from streamrec.scenarios.workload import (
    Catalog,
    Click,
    ClickModel,
    User,
    Workload,
    WorkloadConfig,
    daily_multiplier,
    make_users,
    to_interaction,
)
from streamrec.topics import CatalogItem, Interaction

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance"]


def catalog(n: int = 200, zipf_s: float = 1.0) -> Catalog:
    items = [
        CatalogItem(item_id=str(i), title=f"t{i}", genres=[GENRES[i % len(GENRES)]])
        for i in range(n)
    ]
    # Popularity falls with the id: item "0" is the most popular.
    return Catalog.from_items(items, {str(i): n - i for i in range(n)}, zipf_s)


def workload(seed: int = 0, **fields: object) -> Workload:
    cfg = WorkloadConfig(seed=seed, users=50, **fields)
    return Workload(cfg, catalog(), make_users(cfg, GENRES))


def test_the_same_seed_gives_the_same_run_and_another_seed_another():
    a, b, c = workload(1), workload(1), workload(2)
    assert a.requests(60) == b.requests(60)
    assert a.catalog_events(60) == b.catalog_events(60)
    assert [u.taste for u in a.users] == [u.taste for u in b.users]
    assert a.requests(60) != c.requests(60)
    rng1, rng2 = np.random.default_rng(5), np.random.default_rng(5)
    ranked = [str(i) for i in range(10)]
    user = a.users[0]
    assert a.clicks.clicks(user, ranked, rng1) == b.clicks.clicks(user, ranked, rng2)


def test_item_popularity_is_zipf_over_rank():
    cat = catalog(500, zipf_s=1.0)
    w = cat.weights()
    assert w[0] / w[9] == pytest.approx(10.0)
    assert list(cat.items[i].item_id for i in range(3)) == ["0", "1", "2"]
    views = Counter(workload().organic_views(200_000, np.random.default_rng(0)))
    top = [views[str(i)] for i in range(20)]  # ranks 1..20
    # The empirical log-log slope of frequency over rank is -s.
    slope = np.polyfit(np.log(np.arange(1, 21)), np.log(top), 1)[0]
    assert slope == pytest.approx(-1.0, abs=0.1)


def test_the_evening_peak_is_the_peak_factor_over_the_daytime_rate():
    day = 24.0
    assert daily_multiplier(20.0, day, 0.0, 3.0) == pytest.approx(3.0)
    assert daily_multiplier(8.0, day, 0.0, 3.0) == pytest.approx(1.0, abs=1e-6)
    w = workload(3, day_s=240.0, start_hour=0.0, requests_per_session=1, sessions_per_s=20.0)
    starts = [r.t_s for r in w.requests(240.0)]
    # 10 s of wall time = one hour: 19:30-20:30 against 07:30-08:30.
    peak = sum(195 <= t < 205 for t in starts)
    trough = sum(75 <= t < 85 for t in starts)
    assert peak / trough == pytest.approx(daily_multiplier(20.0, day, 0.0, 3.0), rel=0.2)


def test_a_compressed_day_repeats_within_the_run():
    w = workload(0, day_s=10.0, start_hour=20.0)
    assert w.rate(0.0) == pytest.approx(w.rate(10.0))
    assert w.rate(0.0) == pytest.approx(3.0 * w.cfg.sessions_per_s)


def test_clicks_prefer_better_ranked_and_better_suited_items():
    cfg = WorkloadConfig(seed=0)
    model = ClickModel(cfg, catalog())
    fan = User("u", {"Action": 1.0})
    action, drama = "0", "2"  # same popularity band, Action and Drama
    assert model.probability(fan, action, 0) > model.probability(fan, action, 5)
    assert model.probability(fan, action, 3) > model.probability(fan, drama, 3)
    # A list with the user's genre on top earns more clicks than the same list reversed.
    items = [str(i) for i in range(0, 50, 5)] + [str(i) for i in range(2, 50, 5)]
    good = sorted(items, key=lambda i: -fan.affinity(model.catalog.get(i).genres))
    rng = np.random.default_rng(1)
    good_clicks = sum(len(model.clicks(fan, good, rng)) for _ in range(2000))
    bad_clicks = sum(len(model.clicks(fan, good[::-1], rng)) for _ in range(2000))
    assert good_clicks > 1.3 * bad_clicks


def test_uploads_and_the_viral_item_arrive_and_the_viral_one_tops_popularity():
    w = workload(0, uploads_every_s=10.0, viral_at_s=25.0)
    events = w.catalog_events(60.0)
    assert [e.t_s for e in events if not e.viral] == [10.0, 20.0, 30.0, 40.0, 50.0]
    viral = [e for e in events if e.viral]
    assert [e.t_s for e in viral] == [25.0]
    for e in events:
        w.apply(e)
    assert w.catalog.items[0].item_id == viral[0].item.item_id
    fan = User("u", {"Drama": 1.0})
    assert w.clicks.attract(fan, viral[0].item.item_id) > w.clicks.attract(fan, "2")


def test_users_taste_follows_their_history():
    cfg = WorkloadConfig(users=2)
    users = make_users(cfg, GENRES, history={"1": [["Horror"]] * 9 + [["Comedy"]]})
    assert max(users[0].taste, key=users[0].taste.get) == "Horror"
    assert sum(users[1].taste.values()) == pytest.approx(1.0)


def test_a_click_is_an_interaction_of_the_contract():
    event = to_interaction(Click("7", "42", 0), datetime(2026, 1, 1, tzinfo=UTC), "e-1")
    assert isinstance(event, Interaction)
    assert (event.kind, event.user_id, event.item_id, event.source) == (
        "click",
        "7",
        "42",
        "scenario",
    )


def test_a_scaled_run_offers_the_rate_asked_for_from_its_first_second():
    w = workload(4, peak_factor=1.0, sessions_per_s=2.0)
    target = 150.0
    got = w.requests(20.0, scale=target / w.mean_request_rate(20.0))
    assert len(got) / 20.0 == pytest.approx(target, rel=0.1)
    first = sum(r.t_s < 2.0 for r in got) / 2.0
    assert first == pytest.approx(target, rel=0.2)  # sessions already in full swing at 0
