"""The serving side of the skew check: which batches are sampled and what is counted."""

import numpy as np

from streamrec.infra.settings import Settings
from streamrec.models.feature_profile import FeatureProfile, build_profile
from streamrec.models.features import UserFeatures
from streamrec.models.registry import Manifest, ModelRegistry
from streamrec.serving.memory import TableRanker
from streamrec.serving.metrics import ServingMetrics
from streamrec.serving.model_manager import ModelManager
from streamrec.serving.ports import ProfiledRanker, RankInput
from streamrec.serving.skew_sampler import BatchSampler, SkewSampler

PROFILE = build_profile(np.arange(100, dtype=np.float64)[:, None], ["item_id"])


def test_batch_sampler_takes_an_exact_evenly_spaced_share():
    twentieth, every, none = BatchSampler(0.05), BatchSampler(1.0), BatchSampler(0.0)
    taken = [n for n in range(1000) if twentieth.take()]
    assert len(taken) == 50 and set(np.diff(taken)) == {20}
    assert all(every.take() for _ in range(10))
    assert not any(none.take() for _ in range(10))


def test_sampler_counts_into_the_profile_bins_and_snapshots():
    sampler = SkewSampler("v1", PROFILE, "host:1")
    sampler.observe(np.array([[0.0], [55.0], [99.0]]))
    sampler.observe(np.zeros((0, 1)))  # nothing ranked: not a batch
    sampler.observe(np.zeros((4, 2)))  # another profile's width: ignored
    snap = sampler.snapshot()
    assert (snap.version, snap.worker, snap.batches, snap.rows) == ("v1", "host:1", 1, 3)
    counts = snap.counts["item_id"]
    assert len(counts) == len(PROFILE.features[0].edges) + 1 and sum(counts) == 3
    assert counts[0] == 1 and counts[-1] == 1


class ProfiledTable(TableRanker):
    """The in-memory ranker with a profile: its one feature is the candidate's id."""

    def __init__(self, version: str, profile: FeatureProfile | None) -> None:
        super().__init__(lambda u, i: float(i), version=version)
        self.feature_profile = profile

    def score_with_features(self, batch: list[RankInput]) -> tuple[list[np.ndarray], np.ndarray]:
        return self.score(batch), np.array([[float(i)] for x in batch for i in x.item_ids])


def manager(tmp_path, profiles, **serving):
    settings = Settings().with_overrides(
        stack={"state_dir": tmp_path}, serving={"model_poll_s": 3600.0, **serving}
    )
    registry = ModelRegistry(settings)
    for version in profiles:
        staging = registry.new_version_dir("ranker", version)
        (staging / "weights.bin").write_bytes(version.encode())
        registry.publish("ranker", staging, Manifest(kind="ranker", version=version))

    def loader(mv, device):
        return ProfiledTable(mv.version, profiles[mv.version])

    return ModelManager(settings, ServingMetrics(), loader, watch_topic=False), registry


BATCH = [RankInput(UserFeatures(user_id="u"), ["1", "2", "3"])]


async def test_every_batch_at_share_one_counts_the_features_ranked(tmp_path):
    m, registry = manager(tmp_path, {"a": PROFILE, "b": None}, skew_sample=1.0)
    registry.promote("ranker", "a")
    await m.start()
    try:
        assert isinstance(m.current, ProfiledRanker)
        for _ in range(3):
            m.score_batch(BATCH)
        m._skew_pool.submit(lambda: None).result()  # the skew thread has caught up
        snap = m.skew_sampler.snapshot()
        assert (snap.version, snap.batches, snap.rows) == ("a", 3, 9)
        registry.promote("ranker", "b")  # a version without a profile: nothing to count
        assert await m.refresh() and m.skew_sampler is None
        m.score_batch(BATCH)
    finally:
        await m.stop()


async def test_share_zero_samples_nothing(tmp_path):
    m, registry = manager(tmp_path, {"a": PROFILE}, skew_sample=0.0)
    registry.promote("ranker", "a")
    await m.start()
    try:
        m.score_batch(BATCH)
        assert m.skew_sampler is None
    finally:
        await m.stop()
