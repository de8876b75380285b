"""The ranker's training feature profile: the same inputs serving samples, binned at training."""

import numpy as np
import pandas as pd
import torch

from streamrec.infra.settings import ModelSettings
from streamrec.models.features import LogFeatureSource, UserFeatures
from streamrec.models.fit import fit_ranker
from streamrec.models.ranker import DENSE_FEATURES, N_DENSE
from tests.unit.models.test_ranker_api import model  # noqa: F401 - the tiny ranker fixture


def test_dense_features_are_the_network_inputs_of_the_known_candidates(model):  # noqa: F811
    users = [
        UserFeatures(user_id="a", recent_items=["i1", "i2"], n_interactions=2, mean_rating=4.0),
        UserFeatures(user_id="b", recent_items=["i7"], n_interactions=1),
    ]
    cands = [["i3", "nope", "i4"], ["i9"]]
    got = model.dense_features(users, cands)
    assert got.shape == (3, N_DENSE) and got.dtype == np.float32  # "nope" is not scored
    hist, aggs = model.user_tensors(users)
    cand = torch.tensor([[4, 5], [10, 0]])
    with torch.no_grad():
        want = model.net.inputs(hist, aggs, cand)[..., :N_DENSE]
    assert np.allclose(got, want[cand > 0].numpy())
    assert model.dense_features([], []).shape == (0, N_DENSE)


def test_fit_ranker_profiles_its_training_inputs(model):  # noqa: F811
    table, two_tower = model.table, model.net.inputs.two_tower
    rng = np.random.default_rng(1)
    events = pd.DataFrame(
        {
            "user_id": [f"u{k % 8}" for k in range(200)],
            "item_id": [f"i{int(i)}" for i in rng.integers(0, 60, 200)],
            "rating": rng.integers(1, 6, 200).astype(float),
            "ts": np.arange(200),
            "seq": np.arange(200),
        }
    )
    cfg = ModelSettings(ranker_negatives=4, ranker_depth=20, ranker_epochs=1)
    fitted = fit_ranker(
        cfg,
        table,
        two_tower,
        LogFeatureSource(events[:150], cfg.history_len),
        events[150:],
        {},
        torch.device("cpu"),
    )
    profile = fitted.profile
    assert profile.names == list(DENSE_FEATURES) and profile.rows == 50 * 5
    for f in profile.features:
        assert len(f.shares) == len(f.edges) + 1 and abs(sum(f.shares) - 1) < 1e-9


def test_the_compiled_pass_with_features_scores_as_the_plain_one(model):  # noqa: F811
    users = [
        UserFeatures(user_id="a", recent_items=["i1", "i2"], n_interactions=2, mean_rating=4.0),
        UserFeatures(user_id="b", recent_items=["i7"], n_interactions=1),
    ]
    cands = [["i3", "nope", "i4", "i5"], ["i9"]]
    want_features = model.dense_features(users, cands)
    model.compile()
    scores, features = model.score_batch_with_features(users, cands)
    plain = model.score_batch(users, cands)
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(scores, plain, strict=True))
    assert np.allclose(features, want_features, atol=1e-5) and features.shape == (4, N_DENSE)
