"""Hot swap and the shadow model, with a stand-in loader over a real file registry."""

import numpy as np

from streamrec.infra.settings import Settings
from streamrec.models.features import UserFeatures
from streamrec.models.registry import Manifest, ModelRegistry
from streamrec.serving.memory import TableRanker
from streamrec.serving.metrics import ServingMetrics
from streamrec.serving.model_manager import ModelManager
from streamrec.serving.ports import RankInput


def publish(registry: ModelRegistry, version: str) -> None:
    staging = registry.new_version_dir("ranker", version)
    (staging / "weights.bin").write_bytes(version.encode())
    registry.publish("ranker", staging, Manifest(kind="ranker", version=version))


def manager(tmp_path, **serving) -> tuple[ModelManager, ModelRegistry, ServingMetrics]:
    settings = Settings().with_overrides(
        stack={"state_dir": tmp_path}, serving={"model_poll_s": 3600.0, **serving}
    )
    metrics = ServingMetrics()

    # Version "a" prefers low item ids, "b" high ones: a swap is visible in the scores.
    def loader(mv, device):
        sign = 1.0 if mv.version == "b" else -1.0
        return TableRanker(lambda u, i: sign * float(i), version=mv.version)

    return (
        ModelManager(settings, metrics, loader, watch_topic=False),
        ModelRegistry(settings),
        metrics,
    )


BATCH = [RankInput(UserFeatures(user_id="u"), ["1", "2", "3"])]


async def test_nothing_promoted_means_no_model(tmp_path):
    m, _, _ = manager(tmp_path)
    await m.start()
    try:
        assert m.current is None and not await m.refresh()
    finally:
        await m.stop()


async def test_promotion_swaps_and_each_batch_reports_its_version(tmp_path):
    m, registry, _ = manager(tmp_path)
    publish(registry, "a")
    publish(registry, "b")
    registry.promote("ranker", "a")
    await m.start()
    try:
        ((scores, version),) = m.score_batch(BATCH)
        assert version == "a" and int(np.argmax(scores)) == 0
        registry.promote("ranker", "b")
        assert await m.refresh() is True
        ((scores, version),) = m.score_batch(BATCH)
        assert version == "b" and int(np.argmax(scores)) == 2
        assert m.swaps == 2
        registry.rollback("ranker")
        assert await m.refresh() and m.version == "a"
    finally:
        await m.stop()


async def test_shadow_scores_after_the_answer_and_records_overlap(tmp_path):
    m, registry, metrics = manager(tmp_path, shadow_version="b", shadow_sample=1.0)
    publish(registry, "a")
    publish(registry, "b")
    registry.promote("ranker", "a")
    await m.start()
    try:
        ((_, version),) = m.score_batch(BATCH)
        assert version == "a"  # the shadow never answers
        m._shadow_pool.shutdown(wait=True)  # let the comparison finish
        count = metrics.registry.get_sample_value("serving_shadow_overlap_count")
        assert count == 1
    finally:
        await m.stop()
