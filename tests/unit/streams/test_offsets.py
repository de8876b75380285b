"""PendingOffsets: the committable offset never passes a message still in flight."""

from __future__ import annotations

import random

from streamrec.streams.offsets import PendingOffsets

TP = ("recs.requests", 3)


def test_in_order_finishes_move_the_offset_one_past_each():
    p = PendingOffsets()
    for o in (10, 11, 12):
        p.begin(TP, o)
    assert p.finish(TP, 10) == 11
    assert p.finish(TP, 11) == 12
    assert p.finish(TP, 12) == 13
    assert p.open_count() == 0


def test_a_later_finish_waits_for_the_earlier_one():
    p = PendingOffsets()
    for o in (5, 6, 7):
        p.begin(TP, o)
    assert p.finish(TP, 7) is None  # 5 and 6 still open
    assert p.finish(TP, 6) is None
    assert p.finish(TP, 5) == 8  # everything up to 7 is done
    assert p.committable(TP) == 8


def test_random_completion_order_never_commits_past_an_open_offset():
    rng = random.Random(7)
    p = PendingOffsets()
    offsets = list(range(100, 200))
    for o in offsets:
        p.begin(TP, o)
    order = offsets[:]
    rng.shuffle(order)
    done: set[int] = set()
    last = None
    for o in order:
        moved = p.finish(TP, o)
        done.add(o)
        if moved is not None:
            assert all(x in done for x in range(100, moved)), "committed past an open offset"
            assert last is None or moved > last
            last = moved
    assert last == 200


def test_partitions_are_independent_and_revoked_ones_are_forgotten():
    p = PendingOffsets()
    other = ("recs.requests", 4)
    p.begin(TP, 1)
    p.begin(other, 50)
    assert p.finish(other, 50) == 51
    p.revoke([TP])
    assert p.finish(TP, 1) is None  # the new owner answers it again from the commit
    assert p.committable(TP) is None
    assert p.committable(other) == 51


def test_unknown_or_repeated_finishes_change_nothing():
    p = PendingOffsets()
    p.begin(TP, 1)
    assert p.finish(TP, 2) is None
    assert p.finish(TP, 1) == 2
    assert p.finish(TP, 1) is None
