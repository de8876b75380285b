"""No leakage: a label's features see only events strictly before it."""

import pandas as pd

from streamrec.models.features import LogFeatureSource
from streamrec.models.train import feature_source


def _log(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "ts", "seq"])


BASE = [
    ("u1", "a", 4.0, 100, 0),
    ("u1", "b", 2.0, 200, 1),
    ("u2", "x", 5.0, 150, 2),
    ("u2", "c", 3.0, 250, 3),
    ("u1", "c", 5.0, 300, 4),  # the label event
]
LABEL = pd.DataFrame({"user_id": ["u1"], "item_id": ["c"], "ts": [300]})


def test_planted_future_events_cannot_reach_training_features():
    before = LogFeatureSource(_log(BASE), history_len=50).features(LABEL).iloc[0]
    planted = [
        *BASE,
        ("u1", "FUTURE", 1.0, 301, 5),  # the user's next event
        ("u1", "SAME-SECOND", 1.0, 300, 6),  # same second as the label: not "before"
        ("u3", "c", 1.0, 400, 7),  # the item's future popularity and rating
    ]
    after = LogFeatureSource(_log(planted), history_len=50).features(LABEL).iloc[0]
    assert after["recent_items"] == before["recent_items"] == ["a", "b"]
    assert "FUTURE" not in after["recent_items"] and "SAME-SECOND" not in after["recent_items"]
    assert after["n_interactions"] == before["n_interactions"] == 2
    assert after["mean_rating"] == before["mean_rating"] == 3.0
    assert after["item_popularity"] == before["item_popularity"] == 1  # u2's event at 250
    assert after["item_mean_rating"] == before["item_mean_rating"] == 3.0


def test_the_label_event_itself_is_not_a_feature():
    f = LogFeatureSource(_log(BASE), history_len=50).features(LABEL).iloc[0]
    assert "c" not in f["recent_items"]  # u1's own c at 300 is the label


def test_training_uses_the_point_in_time_source():
    from streamrec.infra.settings import Settings

    source = feature_source(Settings(), _log(BASE))
    assert isinstance(source, LogFeatureSource)
    planted = _log([*BASE, ("u1", "FUTURE", 1.0, 999, 9)])
    got = feature_source(Settings(), planted).features(LABEL).iloc[0]
    assert got["recent_items"] == source.features(LABEL).iloc[0]["recent_items"]


def test_history_is_bounded_and_keeps_the_latest():
    rows = [("u", str(i), 3.0, i, i) for i in range(10)]
    label = pd.DataFrame({"user_id": ["u"], "item_id": ["z"], "ts": [100]})
    f = LogFeatureSource(_log(rows), history_len=3).features(label).iloc[0]
    assert f["recent_items"] == ["7", "8", "9"] and f["n_interactions"] == 10
