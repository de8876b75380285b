"""The train/serve skew check on the real stack: serving samples the features it ranks with
(`serving.skew_sample` 1.0 here: every batch), writes their counts in the promoted version's
training bins to Redis, and `streamrec models skew-report` judges PSI per feature.

The reference profiles are made by this test from the model's own inputs for the very users
and candidates it then asks for (the seeded stores' contents, rebuilt from MovieLens as
`scenarios.seed` writes them): serving must then look like its reference (low PSI). The
same values moved by one standard deviation make a second profile, under a second version
name, that serving must be judged drifted from on every feature.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
from typer.testing import CliRunner

from streamrec.analytics.skew import SkewReport
from streamrec.analytics.skew_source import read_skew
from streamrec.cli import app
from streamrec.infra.settings import Settings
from streamrec.models.feature_profile import build_profile, save_profile
from streamrec.models.features import UserFeatures
from streamrec.models.ranker import DENSE_FEATURES, RankerModel
from streamrec.models.registry import directory_checksum
from streamrec.scenarios.seed import MovieLens, candidate_list
from tests.integration.serving.conftest import USERS_WITH_FEATURES, install_ranker, serve

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def served_inputs(ml: MovieLens, settings: Settings) -> tuple[list[UserFeatures], list[list[str]]]:
    """What serving ranks for the seeded users: their stored history (newest last) and
    aggregates, and their 500 seeded candidates."""
    users, cands = [], []
    for user_id in USERS_WITH_FEATURES:
        hist = ml.history[user_id]
        ratings = [r for _, _, r in hist if r]
        users.append(
            UserFeatures(
                user_id=user_id,
                recent_items=[i for _, i, _ in hist][-settings.serving.history_len :],
                n_interactions=len(hist),
                mean_rating=float(np.mean(ratings)) if ratings else 0.0,
            )
        )
        cands.append([c.item_id for c in candidate_list(ml, user_id, 500).items])
    return users, cands


def with_profile(source: Path, target: Path, values: np.ndarray) -> Path:
    """A copy of the trained version with a profile of `values` (and its checksum again)."""
    shutil.copytree(source, target)
    save_profile(target, build_profile(values, DENSE_FEATURES))
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["checksum"] = directory_checksum(target)
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def serve_and_report(settings: Settings, version: str) -> SkewReport:
    with serve(settings, skew_sample=1.0, cache_ttl_s=0.0, model_poll_s=3600.0) as server:
        assert server.worker.models.version == version
        for user_id in USERS_WITH_FEATURES:
            r = httpx.get(f"{server.url}/v1/users/{user_id}/recommendations?k=10", timeout=30)
            assert r.status_code == 200 and r.json()["model_version"] == version, r.text
    # The worker's stop wrote its last counts: the report has every sampled batch.
    result = CliRunner().invoke(app, ["models", "skew-report", "--json"], env=settings.to_env())
    assert result.exit_code == 0, result.output
    return SkewReport.model_validate_json(result.output)


def test_skew_report_is_low_for_its_own_traffic_and_drift_for_a_shifted_profile(
    serving_stack: Settings, movielens: MovieLens, trained_ranker: Path, tmp_path: Path
):
    settings = serving_stack
    users, cands = served_inputs(movielens, settings)
    values = RankerModel.load(trained_ranker, "cpu").dense_features(users, cands)
    rows = len(values)

    same = with_profile(trained_ranker, tmp_path / "same", values)
    install_ranker(settings, same, "skew-same")
    report = serve_and_report(settings, "skew-same")
    assert report.status == "checked" and report.workers == 1
    assert [f.name for f in report.features] == list(DENSE_FEATURES)
    assert all(f.samples == rows for f in report.features), report
    assert all(f.verdict == "ok" and f.psi is not None and f.psi < 0.01 for f in report.features)

    moved = values + values.std(axis=0, keepdims=True) + 1e-3
    shifted = with_profile(trained_ranker, tmp_path / "shifted", moved)
    install_ranker(settings, shifted, "skew-shifted")
    report = serve_and_report(settings, "skew-shifted")
    assert all(f.samples == rows for f in report.features), report
    assert report.drifted == list(DENSE_FEATURES), report
    assert min(f.psi for f in report.features if f.psi is not None) > 0.5

    # The dashboard and `streamrec report` read the same: the promoted version's counts.
    client = redis.Redis.from_url(settings.redis_url)
    try:
        assert read_skew(settings, client).drifted == list(DENSE_FEATURES)
    finally:
        client.close()
