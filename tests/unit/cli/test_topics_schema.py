"""`streamrec topics schema NAME` prints the JSON Schema of a topic's contract, and the
request example in docs/topics.md is a request the contract accepts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streamrec.cli import app
from streamrec.topics import ALL_TOPICS, RECS_REQUESTS, RecRequest, RecResponse

ROOT = Path(__file__).resolve().parents[3]


def schema_of(name: str) -> dict:
    result = CliRunner().invoke(app, ["topics", "schema", name])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_the_request_schema_says_what_a_foreign_client_must_send():
    schema = schema_of("recs.requests")
    assert schema["title"] == "RecRequest"
    assert set(schema["required"]) == {"correlation_id", "user_id"}
    props = schema["properties"]
    assert props["user_id"]["pattern"] == r"^[A-Za-z0-9_.:@-]+$"
    assert props["sent_at"]["format"] == "date-time"
    assert props["reply_to"]["default"] == "recs.responses"
    assert props["k"]["default"] == 20 and props["k"]["maximum"] == 200
    assert schema["additionalProperties"] is False
    assert schema["x-topic"] == {"name": "recs.requests", "key": "user_id", "value": "json"}


@pytest.mark.parametrize("spec", ALL_TOPICS, ids=[t.name for t in ALL_TOPICS])
def test_every_topic_has_a_schema(spec):
    schema = schema_of(spec.name)
    assert schema["title"] == spec.schema.__name__
    assert schema["x-topic"]["name"] == spec.name


def test_an_unknown_topic_names_the_known_ones():
    result = CliRunner().invoke(app, ["topics", "schema", "recs.request"])
    assert result.exit_code != 0
    assert "recs.requests" in result.output


def _json_blocks(markdown: str) -> list[str]:
    return re.findall(r"```json\n(.*?)```", markdown, re.S)


def test_the_documented_request_and_reply_are_valid():
    doc = (ROOT / "docs" / "topics.md").read_text()
    blocks = [json.loads(b) for b in _json_blocks(doc)]
    requests = [RecRequest.model_validate(b) for b in blocks if "reply_to" in b]
    replies = [RecResponse.model_validate(b) for b in blocks if "items" in b]
    assert requests and replies
    # The kcat line produces one of them, keyed as the topic is.
    kcat = re.search(r"kcat -P .*?-t (\S+) -K ?'?(.)'?", doc)
    assert kcat and kcat.group(1) == RECS_REQUESTS.name
    line = re.search(r"echo '(.*?)'", doc)
    assert line
    key, value = line.group(1).split(kcat.group(2), 1)
    pasted = RecRequest.model_validate_json(value)
    assert key == pasted.user_id and pasted.sent_at.tzinfo is not None
    assert "docs/topics.md" in (ROOT / "README.md").read_text()
    assert "topics.md" in (ROOT / "docs" / "architecture.md").read_text()
