import pytest

from streamrec.streams.admin import TopicManager
from streamrec.topics import ALL_TOPICS, RECS_SERVED

pytestmark = pytest.mark.integration


def test_apply_is_idempotent_and_creates_the_configured_topics(stack):
    manager = TopicManager(stack)
    again = manager.apply()  # the session fixture applied them once already
    assert again.created == [] and again.altered == []
    assert sorted(again.unchanged) == sorted(t.name for t in ALL_TOPICS)

    listed = {t.name: t for t in manager.list()}
    configs = manager.describe_configs(list(ALL_TOPICS))
    for spec in ALL_TOPICS:
        assert listed[spec.name].partitions == manager.partitions_of(spec)
        assert configs[spec.name]["cleanup.policy"] == spec.cleanup_policy
        assert configs[spec.name]["retention.ms"] == str(spec.retention_ms)


def test_apply_repairs_drifted_config(stack):
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    manager = TopicManager(stack)
    resource = ConfigResource(
        ConfigResource.Type.TOPIC,
        "recs.served",
        incremental_configs=[
            ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    for fut in manager.admin.incremental_alter_configs([resource]).values():
        fut.result()
    result = manager.apply()
    assert result.altered == ["recs.served"]
    assert (
        manager.describe_configs([t for t in ALL_TOPICS if t.name == "recs.served"])["recs.served"][
            "retention.ms"
        ]
        != "1000"
    )


def test_a_configured_count_grows_a_topic_and_a_lower_one_is_kept_and_reported(stack, unique):
    spec = RECS_SERVED.model_copy(update={"name": f"t-grow-{unique}", "partitions": 2})
    assert TopicManager(stack, (spec,)).apply().created == [spec.name]

    larger = stack.with_overrides(kafka={"partitions": {spec.name: 4}})
    grown = TopicManager(larger, (spec,)).apply()
    assert grown.altered == [spec.name] and grown.grown == {spec.name: (2, 4)}
    assert _partitions(stack, spec.name) == 4

    # Kafka cannot remove partitions: a lower count leaves the topic as it is, and says so.
    smaller = stack.with_overrides(kafka={"partitions": {spec.name: 3}})
    kept = TopicManager(smaller, (spec,)).apply()
    assert kept.unchanged == [spec.name] and kept.above == {spec.name: (4, 3)}
    assert _partitions(stack, spec.name) == 4


def _partitions(settings, name: str) -> int:
    return len(
        TopicManager(settings, ()).admin.list_topics(name, timeout=10).topics[name].partitions
    )
