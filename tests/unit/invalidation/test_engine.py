"""The invalidation decisions, on synthetic but structured vectors (no broker needed)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from streamrec.infra.settings import InvalidationSettings
from streamrec.invalidation.affected import TasteModel
from streamrec.invalidation.engine import Invalidator
from streamrec.invalidation.errors import InvalidationError
from streamrec.streams.codecs import vector_bytes
from streamrec.topics import CatalogItem, Interaction, ItemVector, RegistryChange
from streamrec.topics.stores import Candidate, CandidateList

DIM = 16
RNG = np.random.default_rng(7)
CENTRES = {g: RNG.normal(size=DIM) for g in ("action", "romance", "horror")}


def genre_vector(genre: str, noise: float = 0.3) -> np.ndarray:
    return (CENTRES[genre] + RNG.normal(scale=noise, size=DIM)).astype(np.float32)


def vec(item_id: str, v: np.ndarray, h: str | None = None) -> tuple[ItemVector, np.ndarray]:
    event = ItemVector(
        item_id=item_id, model_version="t", content_hash=h or item_id, vector=vector_bytes(v)
    )
    return event, v


def rating(user: str, item: str, ts: int, stars: float = 5.0) -> Interaction:
    return Interaction(
        event_id=f"{user}-{item}",
        user_id=user,
        item_id=item,
        kind="rating",
        rating=stars,
        ts=datetime.fromtimestamp(ts, UTC),
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def engine() -> Invalidator:
    cfg = InvalidationSettings(
        neighbour_rank=5, thresholds_max_age_s=0, window_s=1.0, await_index_s=0
    )
    e = Invalidator(cfg, clock=Clock())
    with e.state_only():
        e.on_vectors([vec(f"{g}-{i}", genre_vector(g)) for g in CENTRES for i in range(10)])
    # Three users per genre, each loving five of its items; the user number sets activity.
    for g_idx, g in enumerate(CENTRES):
        for u in range(3):
            user = f"{g}-fan-{u}"
            e.on_interactions(rating(user, f"{g}-{i}", 1000 * g_idx + 10 * u + i) for i in range(5))
    return e


def drain(e: Invalidator) -> list:
    e.clock.now += e.cfg.window_s
    e.tick()
    out = []
    while (cmd := e.next_command()) is not None:
        out.append(cmd)
    return out


def test_a_new_item_of_a_genre_reaches_its_fans_and_no_one_else(engine: Invalidator) -> None:
    engine.on_vectors([vec("new-action", CENTRES["action"])])
    assert engine.dirty == 1 and engine.next_command() is None  # waits for quiet
    commands = drain(engine)
    assert sorted(c.user_id for c in commands) == [f"action-fan-{u}" for u in range(3)]
    assert all(c.mode == "refresh" and c.reason == "vector" for c in commands)
    assert all(c.cause_ids == ["new-action"] for c in commands)


def test_the_most_active_fans_are_refreshed_first(engine: Invalidator) -> None:
    engine.on_vectors([vec("new-horror", CENTRES["horror"])])
    assert [c.user_id for c in drain(engine)] == ["horror-fan-2", "horror-fan-1", "horror-fan-0"]


def test_a_thousand_upserts_of_one_item_make_one_refresh_per_user(engine: Invalidator) -> None:
    engine.on_vectors([vec("new-romance", CENTRES["romance"])])
    for _ in range(1000):  # over 0.99 s: the item never goes quiet for a whole window
        engine.clock.now += 0.00099
        engine.on_items([CatalogItem(item_id="new-romance", title="Love again")])
        assert engine.tick() == 0
    commands = drain(engine)
    assert sorted(c.user_id for c in commands) == [f"romance-fan-{u}" for u in range(3)]


def test_the_same_vector_again_changes_nothing(engine: Invalidator) -> None:
    engine.on_vectors([vec("action-0", genre_vector("action"), h="action-0")])
    assert engine.dirty == 0


def test_a_burst_of_new_items_is_one_pass_with_one_refresh_per_user(engine: Invalidator) -> None:
    burst = [vec(f"burst-{i}", genre_vector("action", noise=0.05)) for i in range(50)]
    engine.on_vectors(burst)
    commands = drain(engine)
    assert sorted(c.user_id for c in commands) == [f"action-fan-{u}" for u in range(3)]
    # Only the burst items that enter a fan's top-5 neighbours are its causes.
    assert all(0 < len(c.cause_ids) <= 5 for c in commands)


def test_a_removal_is_reported_and_refreshes_the_users_holding_it(engine: Invalidator) -> None:
    holders = CandidateList(
        user_id="horror-fan-0",
        model_version="m",
        items=[Candidate(item_id="action-3", score=1.0, sources=["content"])],
    )
    engine.on_candidates([holders])
    effects = engine.on_items([CatalogItem(item_id="action-3", op="remove")])
    assert effects.removed_items == ["action-3"]
    assert [(c.user_id, c.reason) for c in drain(engine)] == [("horror-fan-0", "item_removal")]


def test_history_updates_state_but_issues_nothing(engine: Invalidator) -> None:
    with engine.state_only():
        effects = engine.on_vectors([vec("old-action", CENTRES["action"])])
        removal = engine.on_items([CatalogItem(item_id="action-1", op="remove")])
    assert effects.deletions == [] and drain(engine) == []
    assert removal.removed_items == ["action-1"]  # removals are still marked
    assert "old-action" in engine.model.items


def test_a_promotion_refreshes_every_user_most_active_first(engine: Invalidator) -> None:
    engine.on_registry(RegistryChange(kind="ranker", name="ranker", version="v2", action="promote"))
    commands = drain(engine)
    assert len(commands) == 9
    assert commands[0].user_id == "horror-fan-2" and commands[-1].user_id == "action-fan-0"
    assert {c.reason for c in commands} == {"model_promotion"}


def test_a_canary_share_refreshes_nobody(engine: Invalidator) -> None:
    # Candidates do not depend on the ranker, and a canary moves only some users' ranking.
    change = RegistryChange(
        kind="ranker", name="ranker", version="v2", action="canary", rollout={"share": 0.05}
    )
    assert engine.on_registry(change).queued == 0 and drain(engine) == []


def test_broadcast_mode_deletes_every_affected_key_at_once_without_coalescing() -> None:
    cfg = InvalidationSettings(mode="broadcast", neighbour_rank=5, thresholds_max_age_s=0)
    e = Invalidator(cfg, clock=Clock())
    e.on_vectors([vec(f"a-{i}", genre_vector("action")) for i in range(10)])
    e.on_interactions(rating("fan", f"a-{i}", i) for i in range(5))
    first = e.on_vectors([vec("new", CENTRES["action"], h="1")])
    again = e.on_vectors([vec("new", CENTRES["action"] + 0.01, h="2")])
    assert [(c.user_id, c.mode) for c in first.deletions] == [("fan", "delete")]
    assert len(again.deletions) == 1  # no coalescing: every change deletes again
    assert drain(e) == []


def test_vectors_of_another_dimension_are_refused() -> None:
    model = TasteModel(InvalidationSettings())
    model.items.upsert("a", np.ones(4))
    with pytest.raises(InvalidationError, match="dimension"):
        model.items.upsert("b", np.ones(5))


def test_a_changing_item_is_handled_after_max_delay_even_without_quiet() -> None:
    cfg = InvalidationSettings(
        neighbour_rank=5, thresholds_max_age_s=0, window_s=1.0, max_delay_s=3.0
    )
    e = Invalidator(cfg, clock=Clock())
    with e.state_only():
        e.on_vectors([vec(f"a-{i}", genre_vector("action")) for i in range(10)])
    e.on_interactions(rating("fan", f"a-{i}", i) for i in range(5))
    ticks = 0
    while e.tick() == 0:
        e.clock.now += 0.5
        e.on_items([CatalogItem(item_id="a-0", title="still changing")])
        ticks += 1
    assert e.clock.now >= 3.0 and ticks <= 7


def test_a_new_vector_waits_for_the_index_swap_that_makes_it_searchable() -> None:
    cfg = InvalidationSettings(
        neighbour_rank=5, thresholds_max_age_s=0, window_s=1.0, await_index_s=10.0
    )
    e = Invalidator(cfg, clock=Clock())
    with e.state_only():
        e.on_vectors([vec(f"a-{i}", genre_vector("action")) for i in range(10)])
    e.on_interactions(rating("fan", f"a-{i}", i) for i in range(5))
    e.on_vectors([vec("new", CENTRES["action"])])
    e.clock.now += 2.0
    assert e.tick() == 0  # quiet, but not in the index yet
    e.on_registry(RegistryChange(kind="index", name="index", version="s2", action="promote"))
    assert e.tick() == 1
    assert e.next_command().user_id == "fan"
    # Without a swap, it goes after await_index_s anyway.
    e.on_vectors([vec("newer", CENTRES["action"] + 0.1)])
    e.clock.now += 9.0
    assert e.tick() == 0
    e.clock.now += 1.0
    assert e.tick() == 1


def test_the_last_op_of_an_item_in_a_batch_decides_removed_or_back(engine: Invalidator) -> None:
    effects = engine.on_items([CatalogItem(item_id="x", op="remove"), CatalogItem(item_id="x")])
    assert effects.removed_items == [] and effects.restored_items == ["x"]
    effects = engine.on_items([CatalogItem(item_id="y"), CatalogItem(item_id="y", op="remove")])
    assert effects.removed_items == ["y"] and effects.restored_items == []
