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


def canary_users(version: str, share: float, n: int = 400) -> tuple[list[str], list[str]]:
    from streamrec.analytics.experiments import canary_bucket, canary_limit

    users = [f"user{i}" for i in range(n)]
    inside = [u for u in users if canary_bucket(u, version) < canary_limit(share)]
    return inside, [u for u in users if u not in inside]


async def test_canary_serves_its_share_and_grows_without_losing_users(tmp_path):
    m, registry, metrics = manager(tmp_path)
    publish(registry, "a")
    publish(registry, "b")
    registry.promote("ranker", "a")
    registry.set_canary("ranker", "b", 0.05)
    await m.start()
    try:
        users = [f"user{i}" for i in range(400)]
        batch = [RankInput(UserFeatures(user_id=u), ["1", "2", "3"]) for u in users]
        served = m.score_batch(batch)
        canary = {u for u, (_, v) in zip(users, served, strict=True) if v == "b"}
        inside, _ = canary_users("b", 0.05)
        assert canary == set(inside) and 5 <= len(canary) <= 40
        for u, (scores, v) in zip(users, served, strict=True):
            assert int(np.argmax(scores)) == (2 if v == "b" else 0)  # each side its own model
            assert m.canary_variant(u) == ("canary" if v == "b" else None)
        assert metrics.registry.get_sample_value("serving_canary_share") == 0.05

        registry.set_canary("ranker", "b", 0.25)
        await m.refresh()
        wider = {u for u, (_, v) in zip(users, m.score_batch(batch), strict=True) if v == "b"}
        assert canary < wider and len(wider) > 60

        registry.end_canary("ranker")  # a rollback: everyone on the promoted ranker again
        await m.refresh()
        assert {v for _, v in m.score_batch(batch)} == {"a"} and m.canary_variant(users[0]) is None
    finally:
        await m.stop()


async def test_a_failing_canary_leaves_its_users_on_the_promoted_ranker(tmp_path):
    from streamrec.serving.errors import DependencyError

    class Broken(TableRanker):
        def score(self, batch):
            raise DependencyError("model", "canary broke")

    def loader(mv, device):
        if mv.version == "b":
            return Broken(lambda u, i: 0.0, version="b")
        return TableRanker(lambda u, i: -float(i), version=mv.version)

    settings = Settings().with_overrides(
        stack={"state_dir": tmp_path}, serving={"model_poll_s": 3600.0}
    )
    metrics = ServingMetrics()
    m = ModelManager(settings, metrics, loader, watch_topic=False)
    registry = ModelRegistry(settings)
    publish(registry, "a")
    publish(registry, "b")
    registry.promote("ranker", "a")
    registry.set_canary("ranker", "b", 0.5)
    # The warm-up of a broken model fails too: load it by hand, as a canary that breaks later.
    await m._refresh_promoted()
    from streamrec.serving.model_manager import _Canary

    m.canary = _Canary(loader(registry.get("ranker", "b"), "cpu"), 5000, 0.5)
    inside, outside = canary_users("b", 0.5, 40)
    batch = [RankInput(UserFeatures(user_id=u), ["1", "2"]) for u in inside + outside]
    out = m.score_batch(batch)
    assert len(out) == len(batch) and {v for _, v in out} == {"a"}
    assert metrics.registry.get_sample_value("serving_canary_errors_total") == 1
    await m.stop()


async def test_the_failing_canary_fault_fails_only_the_canarys_batches(tmp_path):
    m, registry, metrics = manager(tmp_path)
    m.settings = m.settings.with_overrides(faults={"canary_score_fails": True})
    publish(registry, "a")
    publish(registry, "b")
    registry.promote("ranker", "a")
    registry.set_canary("ranker", "b", 0.5)
    await m.start()  # the canary's warm-up is not failed: it loads
    try:
        assert m.canary is not None and m.canary.ranker.version == "b"
        inside, outside = canary_users("b", 0.5, 40)
        batch = [RankInput(UserFeatures(user_id=u), ["1", "2"]) for u in inside + outside]
        assert {v for _, v in m.score_batch(batch)} == {"a"}
        assert m.canary_variant(inside[0]) == "canary"  # counted as the canary's errors
        assert metrics.registry.get_sample_value("serving_canary_errors_total") == 1
        outside_only = [RankInput(UserFeatures(user_id=u), ["1", "2"]) for u in outside]
        m.score_batch(outside_only)
        assert metrics.registry.get_sample_value("serving_canary_errors_total") == 1
    finally:
        await m.stop()


async def test_shadow_records_agreement_scores_and_latency(tmp_path):
    m, registry, metrics = manager(tmp_path, shadow_version="b", shadow_sample=1.0)
    publish(registry, "a")
    publish(registry, "b")
    registry.promote("ranker", "a")
    await m.start()
    try:
        items = [str(i) for i in range(40)]
        m.score_batch([RankInput(UserFeatures(user_id="u"), items)] * 3)
        m._shadow_pool.shutdown(wait=True)
        summary = m.shadow_recorder.snapshot()
        # "a" prefers low ids, "b" high ones: their top-20 of 40 share nothing.
        assert summary.requests == 3 and summary.agreement_sum == 0.0
        assert summary.agreement_hist[0] == 3 and summary.served_version == "a"
        assert len(summary.served_seconds) == len(summary.shadow_seconds) == 1
        # Each request's scores at 8 evenly spaced ranks, per model.
        assert len(summary.served_scores) == len(summary.shadow_scores) == 3 * 8
        assert max(summary.served_scores) <= 0 <= min(summary.shadow_scores)
        sample = metrics.registry.get_sample_value
        assert sample("serving_shadow_seconds_count", {"model": "shadow"}) == 1
        assert sample("serving_shadow_score_count", {"model": "served"}) == 3
    finally:
        await m.stop()
