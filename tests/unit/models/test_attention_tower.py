"""The attention user tower: shapes, causality, padding, config round trip, and learning."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from streamrec.infra.settings import Settings
from streamrec.infra.settings.models import ModelSettings
from streamrec.models import fit
from streamrec.models.features import UserFeatures
from streamrec.models.items import N_GENRES, ItemTable
from streamrec.models.ranker import (
    DCNRanker,
    RankerConfig,
    RankerInputs,
    RankerModel,
    load_two_tower,
    save_two_tower,
)
from streamrec.models.two_tower import (
    AttentionUserTower,
    TwoTower,
    TwoTowerConfig,
    UserTower,
)

N_ITEMS = 30
HISTORY = 10


def _table(n: int = N_ITEMS, seed: int = 0) -> ItemTable:
    rng = np.random.default_rng(seed)
    content = rng.normal(size=(n, 16)).astype(np.float32)
    content /= np.linalg.norm(content, axis=1, keepdims=True)
    return ItemTable(
        ids=np.array([f"i{k}" for k in range(n)]),
        genres=(rng.random((n, N_GENRES)) < 0.2).astype(np.float32),
        year=rng.random(n).astype(np.float32),
        popularity=np.ones(n, dtype=np.float32),
        mean_rating=np.full(n, 3.0, dtype=np.float32),
        content=content,
    )


def _cfg(**kw: object) -> TwoTowerConfig:
    base: dict[str, object] = {
        "n_items": N_ITEMS,
        "content_dim": 16,
        "dim": 16,
        "id_dim": 8,
        "history_len": HISTORY,
        "session_len": 3,
        "user_tower": "attention",
        "heads": 2,
    }
    return TwoTowerConfig(**(base | kw))


@pytest.fixture
def model() -> TwoTower:
    torch.manual_seed(0)
    return TwoTower(_cfg(), _table()).eval()


def _aggs(b: int) -> torch.Tensor:
    return torch.full((b, 2), 0.5)


def test_the_setting_picks_the_tower_and_shapes_match_the_mean_tower(model):
    assert isinstance(model.user, AttentionUserTower)
    assert isinstance(TwoTower(_cfg(user_tower="mean"), _table()).user, UserTower)
    hist = torch.randint(1, N_ITEMS + 1, (4, HISTORY))
    hist[0, :7] = 0  # a short history
    hist[1] = 0  # none at all: still a finite vector
    with torch.no_grad():
        u = model.user(hist, _aggs(4))
        seq = model.user.sequence(hist, _aggs(4)[:, None, :].expand(4, HISTORY, 2))
    assert u.shape == (4, 16) and seq.shape == (4, HISTORY, 16)
    assert torch.isfinite(u).all() and torch.isfinite(seq).all()
    assert torch.allclose(u.norm(dim=-1), torch.ones(4), atol=1e-5)
    # The last position of `sequence` is `forward`, given the same aggregates, for both.
    assert torch.allclose(seq[:, -1], u, atol=1e-6)
    mean = TwoTower(_cfg(user_tower="mean"), _table()).eval()
    with torch.no_grad():
        mean_seq = mean.user.sequence(hist, _aggs(4)[:, None, :].expand(4, HISTORY, 2))
        assert torch.allclose(mean_seq[:, -1], mean.user(hist, _aggs(4)), atol=1e-5)


def test_a_later_item_does_not_change_earlier_positions(model):
    hist = torch.randint(1, N_ITEMS + 1, (2, HISTORY))
    changed = hist.clone()
    changed[:, 6] = hist[:, 6] % N_ITEMS + 1
    aggs = _aggs(2)[:, None, :].expand(2, HISTORY, 2)
    with torch.no_grad():
        before, after = model.user.sequence(hist, aggs), model.user.sequence(changed, aggs)
    assert torch.allclose(before[:, :6], after[:, :6], atol=1e-6)
    assert not torch.allclose(before[:, 6:], after[:, 6:], atol=1e-4)


def test_left_padding_does_not_change_the_vector(model):
    items = torch.tensor([[5, 9, 2, 17]])
    narrow = torch.cat([torch.zeros(1, 2, dtype=torch.long), items], dim=1)  # width 6
    wide = torch.cat([torch.zeros(1, HISTORY - 4, dtype=torch.long), items], dim=1)
    with torch.no_grad():
        a, b, c = (model.user(h, _aggs(1)) for h in (items, narrow, wide))
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(a, c, atol=1e-6)
    # Order matters to this tower (the mean tower would give the same vector).
    with torch.no_grad():
        flipped = model.user(items.flip(1), _aggs(1))
    assert not torch.allclose(a, flipped, atol=1e-4)


def test_save_load_round_trip_and_old_configs_load_as_mean(model, tmp_path):
    table = _table()
    save_two_tower(model, tmp_path)
    assert json.loads((tmp_path / "two_tower.json").read_text())["user_tower"] == "attention"
    loaded = load_two_tower(tmp_path, table, torch.device("cpu"))
    assert isinstance(loaded.user, AttentionUserTower)
    hist = torch.randint(0, N_ITEMS + 1, (3, HISTORY))
    with torch.no_grad():
        assert torch.allclose(loaded.user(hist, _aggs(3)), model.user(hist, _aggs(3)))

    # A version saved before the field existed.
    mean = TwoTower(_cfg(user_tower="mean"), table).eval()
    old = tmp_path / "old"
    old.mkdir()
    save_two_tower(mean, old)
    fields = json.loads((old / "two_tower.json").read_text())
    for key in ("user_tower", "blocks", "heads", "dropout"):
        del fields[key]
    (old / "two_tower.json").write_text(json.dumps(fields))
    back = load_two_tower(old, table, torch.device("cpu"))
    assert back.cfg.user_tower == "mean" and isinstance(back.user, UserTower)
    with torch.no_grad():
        assert torch.allclose(back.user(hist, _aggs(3)), mean.user(hist, _aggs(3)))


def test_the_setting_is_validated_and_read_from_the_environment(monkeypatch):
    assert ModelSettings().user_tower == "mean"
    with pytest.raises(ValidationError):
        ModelSettings(user_tower="lstm")
    monkeypatch.setenv("STREAMREC_MODELS__USER_TOWER", "attention")
    assert Settings().models.user_tower == "attention"
    with pytest.raises(ValueError):
        TwoTower(_cfg(dim=16, heads=3), _table())


def test_sequence_windows_make_every_later_interaction_a_target_once():
    table = _table()
    train = pd.DataFrame(
        {
            "user_id": ["a"] * 13 + ["b"],
            "item_id": [f"i{k}" for k in range(13)] + ["i0"],
            "rating": [4.0] * 12 + [np.nan, 2.0],
            "ts": [*range(13), 0],
            "seq": list(range(14)),
        }
    )
    hist, aggs, target = fit.sequence_windows(table, train, 5, horizon=2)
    after, target = target[..., 1], target[..., 0]
    # User a: 12 targets in windows of 5, 5, 2; user b has none (one interaction).
    assert hist.shape == (3, 5) and aggs.shape == (3, 5, 2)
    assert sorted(target[target > 0].tolist()) == list(range(2, 14))
    assert target[0].tolist() == [9, 10, 11, 12, 13] and hist[0].tolist() == [8, 9, 10, 11, 12]
    assert hist[2].tolist() == [0, 0, 0, 1, 2] and target[2].tolist() == [0, 0, 0, 2, 3]
    # The item after the next, past the user's end: none.
    assert after[2].tolist() == [0, 0, 0, 3, 4] and after[0].tolist() == [10, 11, 12, 13, 0]
    # Each position's own count: log1p(n) / 6 with n items read so far.
    assert aggs[2, 3, 0].item() == pytest.approx(np.log1p(1) / 6)
    assert aggs[0, 4, 0].item() == pytest.approx(np.log1p(12) / 6)


def _cyclic_log(n_users: int, length: int, successor: np.ndarray, seed: int) -> pd.DataFrame:
    """Users walk a fixed permutation of the items from a random start: the next item is
    determined by the last one, and the set of items seen says little about it."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        item = int(rng.integers(N_ITEMS))
        for t in range(length):
            rows.append((f"u{u}", f"i{item}", 4.0, t, len(rows)))
            item = int(successor[item])
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "ts", "seq"])


def _next_item_accuracy(model: TwoTower, successor: np.ndarray, seed: int) -> float:
    rng = np.random.default_rng(seed)
    hits, trials = 0, 200
    with torch.no_grad():
        items = model.all_items()
        for _ in range(trials):
            item, seen = int(rng.integers(N_ITEMS)), []
            for _ in range(int(rng.integers(3, HISTORY))):
                seen.append(item)
                item = int(successor[item])
            hist = torch.zeros(1, HISTORY, dtype=torch.long)
            hist[0, HISTORY - len(seen) :] = torch.tensor(seen) + 1  # dense index = id + 1
            scores = (model.user(hist, _aggs(1)) @ items.T)[0]
            scores[0] = float("-inf")
            scores[hist[0]] = float("-inf")  # as the evaluation does: no item already read
            hits += int(scores.argmax()) == item + 1
    return hits / trials


def test_a_tiny_seeded_run_learns_a_sequential_pattern(monkeypatch):
    # One cycle through all the items in a random order (no shorter loops, so the next
    # item is never one already read).
    order = np.random.default_rng(1).permutation(N_ITEMS)
    successor = np.empty(N_ITEMS, dtype=np.int64)
    successor[order] = np.roll(order, -1)
    train = _cyclic_log(40, 16, successor, seed=2)
    table = _table()
    cfg = ModelSettings(seed=3, lr=1e-2, temperature=0.1)
    monkeypatch.setattr(fit, "SEQUENCE_PASSES", 1)
    monkeypatch.setattr(fit, "SEQUENCE_BATCH", 8)
    monkeypatch.setattr(fit, "SEQUENCE_MAX_LR", 1e-2)
    monkeypatch.setattr(fit, "SEQUENCE_HORIZON", 1)  # the next item is the whole pattern
    monkeypatch.setattr(fit, "SEQUENCE_EMA", 0.0)  # ~100 steps: an average of ~100 is too long
    threads = torch.get_num_threads()
    torch.manual_seed(3)
    tower = _cfg(dropout=0.1)  # 40 short users: the default 0.5 is for ML-100K
    untrained = TwoTower(tower, table).eval()
    try:
        torch.set_num_threads(1)  # tiny matrices: a second thread only adds contention
        with fit.deterministic():
            model = fit.fit_two_tower(
                cfg,
                table,
                None,
                train,
                torch.device("cpu"),
                epochs=10,
                tower=tower,  # type: ignore[arg-type]
            )
    finally:
        torch.set_num_threads(threads)
    # Chance: one of the ~23 items not yet read.
    assert _next_item_accuracy(untrained, successor, 4) < 0.15
    assert _next_item_accuracy(model, successor, 4) > 0.8


def test_the_compiled_ranker_scores_like_the_eager_one_with_the_attention_tower(model):
    # Serving traces the ranker, the user tower inside it (ADR 0047), at one batch size.
    table = _table()
    cfg = RankerConfig(n_items=N_ITEMS)
    ranker = RankerModel(
        DCNRanker(cfg, RankerInputs(cfg, table, model)), table, "v", torch.device("cpu")
    )
    users = [
        UserFeatures(user_id=str(k), recent_items=[f"i{j}" for j in range(k)], n_interactions=k)
        for k in range(5)
    ]
    cands = [[f"i{j}" for j in range(1, 4 + k)] for k in range(5)]
    eager = ranker.score_batch(users, cands)
    ranker.compile()
    traced = ranker.score_batch(users, cands)
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(eager, traced, strict=True))


def test_a_new_per_position_recipe_is_a_new_version_of_the_attention_tower_only(monkeypatch):
    from streamrec.models.train import _config_hash

    mean = Settings()
    attention = mean.model_copy(
        update={"models": mean.models.model_copy(update={"user_tower": "attention"})}
    )
    before = _config_hash(mean, (3,)), _config_hash(attention, (3,))
    monkeypatch.setattr(fit, "SEQUENCE_EMA", 0.5)
    after = _config_hash(mean, (3,)), _config_hash(attention, (3,))
    assert after[0] == before[0]
    assert after[1] != before[1]
