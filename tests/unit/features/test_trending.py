"""Event-time hopping windows (no services)."""

from streamrec.features.trending import WINDOWS, TrendingState

H = 3_600_000
ONE_H, DAY = WINDOWS


def test_latest_windows_follow_event_time_not_the_wall_clock():
    state = TrendingState()
    t0 = 852_076_800_000  # 1997-01-01: far in the past of the wall clock
    for ts, item in [(t0, "a"), (t0 + 10 * 60_000, "a"), (t0 + 2 * H, "b"), (t0 + 2 * H, "a")]:
        assert state.add(ts, item, lateness_ms=600_000)
    end, counts = state.latest(ONE_H)
    assert end == t0 + 2 * H + ONE_H.hop_ms
    assert counts == {"a": 1, "b": 1}  # t0's events are out of the latest 1 h window
    end, counts = state.latest(DAY)
    assert end == t0 + 3 * H and counts == {"a": 3, "b": 1}


def test_too_late_events_are_not_counted_and_old_buckets_are_pruned():
    state = TrendingState()
    state.add(100 * H, "a", lateness_ms=600_000)
    assert not state.add(100 * H - 600_001, "b", lateness_ms=600_000)
    assert state.add(100 * H - 600_000, "c", lateness_ms=600_000)
    state.add(200 * H, "d", lateness_ms=600_000)
    assert all(b >= 200 * H - DAY.size_ms - H for b in state.buckets[DAY.name])
    assert TrendingState.from_bytes(state.to_bytes()) == state
