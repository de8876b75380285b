"""The coalescer: one refresh per key per window, value order, bounded, promotion sweep."""

from __future__ import annotations

from streamrec.invalidation.coalescer import MAX_CAUSES, SWEEP_EVERY, Coalescer


def drain(c: Coalescer) -> list:
    out = []
    while (p := c.pop()) is not None:
        out.append(p)
    return out


def test_many_changes_to_one_key_become_one_refresh() -> None:
    c = Coalescer(100, priority_of=lambda u: 0.0)
    for i in range(1000):
        c.add(["u1", "u2"], "item_upsert", "item-9" if i % 2 else "item-8")
    assert c.close_window() == 2
    out = drain(c)
    assert sorted(p.user_id for p in out) == ["u1", "u2"]
    assert all(p.changes == 1000 for p in out)
    assert sorted(out[0].cause_ids) == ["item-8", "item-9"]
    assert c.stats.coalesced == 1998


def test_nothing_leaves_before_the_window_closes() -> None:
    c = Coalescer(100, priority_of=lambda u: 0.0)
    c.add(["u1"], "vector", "i1")
    assert c.pop() is None
    c.close_window()
    assert c.pop().user_id == "u1"
    assert c.pop() is None


def test_a_key_waiting_in_the_queue_absorbs_a_later_change() -> None:
    c = Coalescer(100, priority_of=lambda u: 0.0)
    c.add(["u1"], "vector", "i1")
    c.close_window()
    c.add(["u1"], "item_removal", "i2")
    c.close_window()
    out = drain(c)
    assert len(out) == 1
    assert out[0].reason == "item_removal"  # the most consequential reason wins
    assert out[0].cause_ids == ["i1", "i2"]


def test_the_most_recently_active_users_go_first() -> None:
    seen = {"old": 1.0, "recent": 100.0, "middle": 50.0}
    c = Coalescer(100, priority_of=seen.__getitem__)
    c.add(["old", "recent", "middle"], "vector", "i1")
    c.close_window()
    assert [p.user_id for p in drain(c)] == ["recent", "middle", "old"]


def test_the_queue_is_bounded_and_counts_what_it_drops() -> None:
    c = Coalescer(3, priority_of=lambda u: 0.0)
    c.add([f"u{i}" for i in range(5)], "vector", "i1")
    assert c.pending == 3
    assert c.stats.dropped == 2


def test_a_promotion_sweeps_every_user_once_and_targeted_refreshes_keep_going() -> None:
    c = Coalescer(100, priority_of=lambda u: 0.0)
    users = [f"u{i}" for i in range(10)]
    c.start_sweep(users, "ranker:v2")
    c.add(["t1", "t2", "t3", "t4", "t5", "t6"], "vector", "i1")
    c.close_window()
    order = [p.user_id for p in drain(c)]
    # Every targeted key and every user exactly once.
    assert sorted(order) == sorted([*users, "t1", "t2", "t3", "t4", "t5", "t6"])
    # The sweep is not starved while targeted refreshes wait: it gets every Nth slot.
    first = order[:SWEEP_EVERY]
    assert any(u.startswith("u") for u in first) and any(u.startswith("t") for u in first)


def test_the_sweep_skips_users_already_refreshed_since_the_promotion() -> None:
    c = Coalescer(100, priority_of=lambda u: 0.0)
    c.start_sweep(["a", "b", "c"], "ranker:v2")
    c.add(["c"], "vector", "i1")
    c.close_window()
    out = drain(c)
    assert sorted(p.user_id for p in out) == ["a", "b", "c"]


def test_causes_are_kept_but_bounded() -> None:
    c = Coalescer(100, priority_of=lambda u: 0.0)
    for i in range(50):
        c.add(["u1"], "vector", f"item-{i}")
    c.close_window()
    assert len(c.pop().cause_ids) == MAX_CAUSES
