"""What a foreign producer can put in a topic: times without a zone, user ids, reply topics."""

from __future__ import annotations

import typing
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from streamrec.streams import codecs
from streamrec.topics import ALL_TOPICS, RECS_REQUESTS, RecRequest, stores
from streamrec.topics.errors import SchemaError


def _contracts() -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = [spec.schema for spec in ALL_TOPICS]
    found += [
        v
        for v in vars(stores).values()
        if isinstance(v, type) and issubclass(v, BaseModel) and v.__module__ == stores.__name__
    ]
    return found


def _datetime_fields() -> list[tuple[str, str, TypeAdapter]]:
    fields = []
    for schema in _contracts():
        for name, info in schema.model_fields.items():
            annotation = info.annotation
            if annotation is datetime or datetime in typing.get_args(annotation):
                fields.append((schema.__name__, name, TypeAdapter(info.rebuild_annotation())))
    return fields


DATETIME_FIELDS = _datetime_fields()


def test_the_contracts_have_datetime_fields():
    assert len(DATETIME_FIELDS) >= 14  # the scan found them (sent_at, ts, served_at...)


@pytest.mark.parametrize(
    ("schema", "field", "adapter"), DATETIME_FIELDS, ids=[f"{s}.{f}" for s, f, _ in DATETIME_FIELDS]
)
def test_every_contract_time_without_a_zone_is_utc(schema, field, adapter):
    # A naive time compared with an aware one raises TypeError wherever it is used later.
    for value in ("2026-12-01T19:33:00", datetime(2026, 12, 1, 19, 33)):
        parsed = adapter.validate_python(value)
        assert parsed.tzinfo is not None and parsed.utcoffset() == timedelta(0), (schema, field)
        assert parsed.replace(tzinfo=None) == datetime(2026, 12, 1, 19, 33)
    east = adapter.validate_python("2026-12-01T19:33:00+02:00")
    assert east == datetime(2026, 12, 1, 17, 33, tzinfo=UTC)
    assert east.utcoffset() == timedelta(0)


def test_a_naive_sent_at_decodes_to_an_aware_time_that_can_be_aged():
    raw = b'{"correlation_id": "c1", "user_id": "7", "sent_at": "2026-12-01T19:33:00"}'
    request = codecs.decode(RECS_REQUESTS, raw)
    assert isinstance(request, RecRequest)
    assert request.sent_at == datetime(2026, 12, 1, 19, 33, tzinfo=UTC)
    assert datetime.now(UTC) - request.sent_at > timedelta(0)
    local = RecRequest(
        correlation_id="c",
        user_id="7",
        sent_at=datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=5))),
    )
    assert local.sent_at.tzinfo is UTC


@pytest.mark.parametrize(
    "user_id", ["用户/../x", "a b", "a/b", "", "x" * 129, "a\nb", "tab\t", "é"]
)
def test_a_request_with_a_user_id_http_refuses_is_refused(user_id):
    with pytest.raises(ValidationError):
        RecRequest(correlation_id="c", user_id=user_id)
    raw = (
        RecRequest(correlation_id="c", user_id="ok")
        .model_dump_json()
        .replace('"user_id":"ok"', '"user_id":' + TypeAdapter(str).dump_json(user_id).decode())
    )
    with pytest.raises(SchemaError, match="user_id"):
        codecs.decode(RECS_REQUESTS, raw.encode())


@pytest.mark.parametrize("user_id", ["1", "u:42", "someone-new", "a.b@c_d", "x" * 128])
def test_user_ids_http_accepts_are_accepted(user_id):
    assert RecRequest(correlation_id="c", user_id=user_id).user_id == user_id


def test_http_and_the_topic_share_one_user_id_rule():
    from streamrec.serving import fast_path, schemas
    from streamrec.topics.base import USER_ID_MAX_LENGTH, USER_ID_PATTERN

    assert schemas.USER_ID_PATTERN is USER_ID_PATTERN
    assert schemas.USER_ID_MAX_LENGTH == USER_ID_MAX_LENGTH
    assert fast_path.ROUTE.fullmatch("/v1/users/a b/recommendations") is None
    with pytest.raises(ValidationError):
        schemas.RecQuery(request_id="r", user_id="用户/../x")


@pytest.mark.parametrize("reply_to", ["a b", "../x", "x" * 250, "", "recs.responses\n"])
def test_a_reply_topic_that_is_no_kafka_topic_name_is_refused(reply_to):
    with pytest.raises(ValidationError):
        RecRequest(correlation_id="c", user_id="1", reply_to=reply_to)
