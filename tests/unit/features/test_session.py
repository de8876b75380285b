"""The session state logic against a straightforward recomputation (no services)."""

import random

from streamrec.features.session import Outcome, SessionState, apply_event
from streamrec.infra.settings import FeatureSettings
from tests.features_reference import assert_features_equal, recompute

CFG = FeatureSettings()
GENRES = {"1": ("Action", "Comedy"), "2": ("Drama",), "3": (), "4": ("Sci-Fi", "War", "Action")}
MIN = 60_000


def _feed(state, events, cfg=CFG):
    outcomes = []
    for n, (ts, item, rating) in enumerate(events):
        outcomes.append(
            apply_event(
                state,
                cfg,
                event_id=f"e{ts}-{item}-{n}",
                ts=ts,
                item_id=item,
                genres=GENRES.get(item, ()),
                rating=rating,
            )
        )
    return outcomes


def _all(state):
    return {**state.features(), **state.longterm_features(CFG.top_genres)}


def test_in_order_events_equal_the_recomputation():
    rng = random.Random(1)
    ts, events = 1_000_000_000, []
    for _ in range(300):
        ts += rng.choice([0, 5 * MIN, 29 * MIN, 30 * MIN, 31 * MIN, 3 * 24 * 60 * MIN])
        events.append((ts, rng.choice("1234"), rng.choice([None, 1.0, 4.5])))
    state = SessionState()
    assert set(_feed(state, events)) == {Outcome.ACCEPTED}
    assert_features_equal(_all(state), recompute(events, GENRES, CFG), "in order")


def test_late_events_within_lateness_give_the_same_features_as_in_order():
    base = 2_000_000_000
    # Two sessions 40 min apart; a late event at +20 min bridges them into one.
    events = [(base, "1", None), (base + 40 * MIN, "2", None), (base + 20 * MIN, "4", 3.0)]
    cfg = CFG.model_copy(update={"allowed_lateness_s": 3600})
    state = SessionState()
    assert set(_feed(state, events, cfg)) == {Outcome.ACCEPTED}
    got = _all(state)
    assert got["session_interactions"] == 3 and got["session_start_ms"] == base
    assert got["last_items"] == ["1", "4", "2"]
    assert_features_equal(got, recompute(events, GENRES, cfg), "bridged")


def test_shuffled_within_lateness_equals_sorted():
    rng = random.Random(7)
    cfg = CFG.model_copy(update={"allowed_lateness_s": 24 * 3600})
    events = [
        (3_000_000_000 + rng.randrange(0, 6 * 3600_000), rng.choice("1234"), None)
        for _ in range(200)
    ]
    ordered = sorted(range(len(events)), key=lambda i: events[i][0])
    state = SessionState()
    shuffled = events[:]
    rng.shuffle(shuffled)
    assert set(_feed(state, shuffled, cfg)) == {Outcome.ACCEPTED}
    want = recompute([events[i] for i in ordered], GENRES, cfg)
    got = _all(state)
    # Ties in event time may order the last items differently; compare everything else.
    want.pop("last_items"), got.pop("last_items")
    assert_features_equal(got, want, "shuffled")


def test_duplicates_and_too_late_events_change_nothing():
    state = SessionState()
    _feed(state, [(10 * 3600_000, "1", 4.0), (10 * 3600_000 + MIN, "2", 2.0)])
    before = state.to_bytes()
    again = apply_event(
        state,
        CFG,
        event_id="e36000000-1-0",
        ts=10 * 3600_000,
        item_id="1",
        genres=GENRES["1"],
        rating=4.0,
    )
    assert again is Outcome.DUPLICATE
    late = apply_event(
        state,
        CFG,
        event_id="old",
        ts=10 * 3600_000 - CFG.allowed_lateness_s * 1000,
        item_id="3",
        genres=(),
        rating=None,
    )
    assert late is Outcome.TOO_LATE
    assert state.to_bytes() == before


def test_bounded_ids_refuse_what_they_can_no_longer_dedupe():
    cfg = CFG.model_copy(update={"recent_ids_max": 5})
    state = SessionState()
    for i in range(8):
        assert (
            apply_event(
                state, cfg, event_id=f"x{i}", ts=1000 + i, item_id="1", genres=(), rating=None
            )
            is Outcome.ACCEPTED
        )
    assert len(state.recent) == 5
    # x0..x2 were forgotten: replaying one of them must not count it again.
    assert (
        apply_event(state, cfg, event_id="x1", ts=1001, item_id="1", genres=(), rating=None)
        is Outcome.TOO_LATE
    )
    assert state.total == 8


def test_state_round_trips_through_bytes():
    state = SessionState()
    _feed(state, [(5_000_000, "1", 3.0), (5_000_000 + MIN, "4", None)])
    assert SessionState.from_bytes(state.to_bytes()) == state
    assert SessionState.from_bytes(None) == SessionState()
