import pytest

from streamrec.streams.admin import TopicManager
from streamrec.topics import ALL_TOPICS

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
