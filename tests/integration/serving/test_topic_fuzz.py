"""The request topic fuzzed on the real broker: random bytes, broken JSON and requests with
one field made wrong (types, ranges, unknown fields, ids, reply topics), interleaved with
valid requests. Every malformed message ends on dead.letters with a reason, and every
valid request gets its reply while they flow."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from streamrec.infra.settings import Settings
from streamrec.streams import codecs
from streamrec.topics import DEAD_LETTERS, RECS_REQUESTS, DeadLetter
from streamrec.topics.errors import SchemaError
from tests.integration.serving.conftest import serve
from tests.integration.serving.test_topic_server import Client, _warm_up
from tests.kafka_helpers import end_offsets, read_range, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

POISON_PER_EXAMPLE = 60
VALID_EVERY = 6  # one valid request after every few malformed ones

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
WRONG_FIELDS = {
    "correlation_id": st.one_of(
        st.just(""), st.just("x" * 5000), JSON_SCALARS.filter(lambda v: not isinstance(v, str))
    ),
    "user_id": st.one_of(
        st.sampled_from(["", "用户/../x", "a b", "../etc", "x" * 500, "\x00"]),
        st.integers(),
        st.lists(st.text(max_size=3), max_size=2),
    ),
    "k": st.one_of(st.integers(max_value=0), st.integers(min_value=201), st.text(max_size=5)),
    "reply_to": st.one_of(
        st.sampled_from(["catalog.items", "dead.letters", "", "../x", "recs.responses.nope.zz"]),
        st.integers(),
    ),
    "priority": st.text(max_size=12).filter(
        lambda v: v not in ("interactive", "batch", "background")
    ),
    "recent_item_ids": st.one_of(
        st.text(max_size=5), st.lists(st.integers(), min_size=1, max_size=3), st.just(["x"] * 51)
    ),
    "budget_ms": st.one_of(
        st.integers(max_value=0), st.text(max_size=4), st.integers(min_value=10**7)
    ),
    "sent_at": st.one_of(
        st.sampled_from(["yesterday", "2026-13-45T99:00:00", ""]), st.integers(min_value=10**15)
    ),
    "schema_version": st.integers().filter(lambda v: v != 1),
}


def _payloads(reply_to: str) -> st.SearchStrategy[bytes]:
    base = {"correlation_id": "fuzz", "user_id": "1", "reply_to": reply_to}
    one_wrong = st.sampled_from(sorted(WRONG_FIELDS)).flatmap(
        lambda name: WRONG_FIELDS[name].map(lambda v: {**base, name: v})
    )
    unknown_field = (
        st.text(min_size=1, max_size=10)
        .filter(lambda n: n not in WRONG_FIELDS)
        .flatmap(lambda name: JSON_VALUES.map(lambda v: {**base, name: v}))
    )
    as_json = st.one_of(one_wrong, unknown_field, JSON_VALUES).map(lambda v: json.dumps(v).encode())
    broken = st.one_of(
        st.binary(max_size=300),
        st.text(max_size=200).map(str.encode),
        st.sampled_from(
            [b"", b"{", b"[NaN]", b'{"k": NaN}', b"\xff\xfe", b"null", b"[" * 2000, b'{"a":' * 600]
        ),
        as_json.map(lambda b: b[: max(1, len(b) // 2)]),
    )
    return st.one_of(as_json, broken).filter(_malformed(reply_to))


def _malformed(reply_to: str):
    """The contract is the oracle: a value it refuses is poison, and so is a valid request
    for any other reply topic (not allowed, or allowed with no topic: the server refuses)."""

    def malformed(value: bytes) -> bool:
        try:
            return codecs.decode(RECS_REQUESTS, value).reply_to != reply_to
        except SchemaError:
            return True

    return malformed


@pytest.fixture(scope="module")
def server(serving_stack: Settings):
    with serve(serving_stack, topic=True, consumer_group=f"serving-{uuid.uuid4().hex[:6]}") as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"recs.responses.test.{uuid.uuid4().hex[:8]}"
    admin = AdminClient(server.settings.kafka_config())  # kept: a dropped handle aborts
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(30)
    c = Client(server.settings, name)
    _warm_up(c)
    yield c
    c.close()


@given(data=st.data())
@hypothesis_settings(
    max_examples=3,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: each example is a broker round
    suppress_health_check=list(HealthCheck),
)
def test_every_malformed_request_is_dead_lettered_and_valid_ones_are_answered(server, client, data):
    settings = server.settings
    run = uuid.uuid4().hex[:8]
    payloads = data.draw(
        st.lists(
            _payloads(client.reply_to), min_size=POISON_PER_EXAMPLE, max_size=POISON_PER_EXAMPLE
        )
    )
    before = end_offsets(settings, DEAD_LETTERS.name)
    keys, asked = {}, []
    for i, value in enumerate(payloads):
        key = f"fuzz-{run}-{i}"
        keys[key] = value
        client.producer.produce(RECS_REQUESTS.name, key=key.encode(), value=value)
        if i % VALID_EVERY == VALID_EVERY - 1:
            cid = f"valid-{run}-{i}"
            asked.append(cid)
            client.ask(cid, str(1 + i % 40), k=5)
    client.producer.flush(30)

    letters: dict[str, DeadLetter] = {}

    def all_dead_lettered() -> bool:
        after = end_offsets(settings, DEAD_LETTERS.name)
        for _k, v in read_range(settings, DEAD_LETTERS.name, before, after):
            letter = codecs.decode_json(DeadLetter, v)
            if letter.key in keys:
                letters[letter.key] = letter
        return len(letters) >= len(keys)

    wait_for(all_dead_lettered, 120, f"{len(keys)} dead letters", interval=0.5)
    for key, letter in letters.items():
        assert letter.source_topic == RECS_REQUESTS.name and letter.processor == "serving"
        assert letter.reason.strip(), (key, keys[key][:200])
    for cid in asked:
        assert client.reply(cid, timeout_s=60).correlation_id == cid
