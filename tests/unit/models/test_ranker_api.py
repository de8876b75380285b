"""The inference API serving codes against: load, score_batch, unknown items, version."""

import numpy as np
import pytest
import torch

from streamrec.models.errors import ModelLoadError
from streamrec.models.features import UserFeatures
from streamrec.models.items import N_GENRES, ItemTable
from streamrec.models.ranker import (
    UNKNOWN_SCORE,
    DCNRanker,
    RankerConfig,
    RankerInputs,
    RankerModel,
)
from streamrec.models.retriever import RetrieverModel, save_retriever
from streamrec.models.two_tower import TwoTower, TwoTowerConfig


@pytest.fixture
def model():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n = 60
    content = rng.normal(size=(n, 16)).astype(np.float32)
    content /= np.linalg.norm(content, axis=1, keepdims=True)
    table = ItemTable(
        ids=np.array([f"i{k}" for k in range(n)]),
        genres=(rng.random((n, N_GENRES)) < 0.2).astype(np.float32),
        year=rng.random(n).astype(np.float32),
        popularity=rng.integers(0, 50, n).astype(np.float32),
        mean_rating=(rng.random(n) * 5).astype(np.float32),
        content=content,
    )
    tt = TwoTower(TwoTowerConfig(n_items=n, content_dim=16, dim=8, history_len=10), table)
    cfg = RankerConfig(n_items=n)
    return RankerModel(
        DCNRanker(cfg, RankerInputs(cfg, table, tt)), table, "v-test", torch.device("cpu")
    )


def test_save_load_and_score_batch_round_trip(model, tmp_path):
    model.save(tmp_path)
    loaded = RankerModel.load(tmp_path, "cpu")
    users = [
        UserFeatures(user_id="a", recent_items=["i1", "i2"], n_interactions=2, mean_rating=4.0),
        UserFeatures(user_id="b"),  # no history at all
    ]
    cands = [["i3", "i4", "nope", "i5"], ["i9"]]
    got = loaded.score_batch(users, cands)
    want = model.score_batch(users, cands)
    assert [g.shape for g in got] == [(4,), (1,)]
    assert all(np.allclose(g, w) for g, w in zip(got, want, strict=True))
    assert got[0][2] == UNKNOWN_SCORE and np.isfinite(got[0][[0, 1, 3]]).all()
    # Micro-batching must not change a user's scores.
    alone = loaded.score(users[0], cands[0])
    assert np.allclose(alone, got[0], atol=1e-5)
    assert loaded.version == tmp_path.name


def test_a_missing_artifact_is_a_clear_error(model, tmp_path):
    model.save(tmp_path)
    (tmp_path / "ranker.pt").unlink()
    with pytest.raises(ModelLoadError, match="ranker"):
        RankerModel.load(tmp_path, "cpu")


def test_retriever_search_leaves_out_seen_items(model, tmp_path):
    save_retriever(model, tmp_path)
    r = RetrieverModel.load(tmp_path, "cpu")
    user = UserFeatures(user_id="a", recent_items=["i1", "i2", "i3"], n_interactions=3)
    hits = r.search([user], 10)[0]
    assert len(hits) == 10 and not {"i1", "i2", "i3"} & {h[0] for h in hits}
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    similar = r.similar_content(["i1"], 5, exclude={"i1"})
    assert len(similar) == 5 and "i1" not in {h[0] for h in similar}


def test_the_compiled_ranker_scores_like_the_eager_one_at_any_shape(model, tmp_path):
    """The TorchScript trace is taken on a 2 x 3 batch; other batch sizes, candidate counts
    and histories (empty, short, longer than the model keeps) must score as the eager net."""
    model.save(tmp_path)
    compiled = RankerModel.load(tmp_path, "cpu", compiled=True)
    assert compiled.scorer is not compiled.net
    rng = np.random.default_rng(1)
    ids = [f"i{k}" for k in range(60)]
    for batch, width in [(1, 1), (1, 500), (5, 37), (33, 12)]:
        users = [
            UserFeatures(
                user_id=f"u{b}",
                recent_items=list(rng.choice(ids, size=int(rng.integers(0, 25)))),
                n_interactions=int(rng.integers(0, 100)),
                mean_rating=float(rng.random() * 5),
            )
            for b in range(batch)
        ]
        cands = [list(rng.choice([*ids, "unknown"], size=width)) for _ in range(batch)]
        got = compiled.score_batch(users, cands)
        want = model.score_batch(users, cands)
        assert all(np.allclose(g, w, atol=1e-4) for g, w in zip(got, want, strict=True))
