"""The stored form of candidate lists: lossless, checked, and readable from the old JSON."""

import pytest

from streamrec.topics import candidate_codec
from streamrec.topics.errors import SchemaError
from streamrec.topics.stores import Candidate, CandidateList


def a_list(n: int = 500) -> CandidateList:
    sources = [["two_tower"], ["covisit", "content"], ["trending"], []]
    return CandidateList(
        user_id="u-1",
        model_version="v7",
        items=[
            Candidate(item_id=f"item-{i}", score=1.0 / (i + 3), sources=sources[i % 4])
            for i in range(n)
        ],
    )


@pytest.mark.parametrize("n", [0, 1, 500])
def test_round_trip_is_lossless(n):  # sources in one order per list, as fusion writes them
    value = a_list(n)
    raw = candidate_codec.encode(value)
    assert candidate_codec.decode(raw) == value
    ranked = candidate_codec.read_ranked(raw)
    assert ranked.item_ids == [c.item_id for c in value.items]
    assert ranked.scores == [c.score for c in value.items]  # float64: bit for bit
    assert ranked.model_version == "v7"


def test_it_is_a_quarter_of_the_json():
    value = a_list()
    assert len(candidate_codec.encode(value)) < len(value.model_dump_json()) / 3


def test_lists_stored_as_json_before_are_still_read():
    value = a_list(20)
    raw = value.model_dump_json().encode()
    assert candidate_codec.decode(raw) == value
    assert candidate_codec.read_ranked(raw).item_ids == [c.item_id for c in value.items]


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[:-3],  # the last id cut short
        lambda raw: raw[: len(raw) // 2],
        lambda raw: b"XX" + raw[2:],  # not our magic
        lambda raw: raw[:8] + b"[" + raw[9:],  # a broken header
        lambda raw: raw + b"\x1fextra",  # one id too many
        lambda raw: b"",
    ],
)
def test_a_damaged_value_is_a_schema_error(damage):
    raw = candidate_codec.encode(a_list(50))
    damaged = damage(raw)
    with pytest.raises(SchemaError, match="invalid stored CandidateList"):
        candidate_codec.read_ranked(damaged)
    with pytest.raises(SchemaError):
        candidate_codec.decode(damaged)


def test_what_cannot_be_stored_is_refused():
    bad_id = CandidateList(
        user_id="u", model_version="v", items=[Candidate(item_id="a\x1fb", score=1, sources=[])]
    )
    with pytest.raises(SchemaError, match="separator"):
        candidate_codec.encode(bad_id)
    many = CandidateList(
        user_id="u",
        model_version="v",
        items=[Candidate(item_id="a", score=1, sources=[f"s{i}" for i in range(17)])],
    )
    with pytest.raises(SchemaError, match="sources"):
        candidate_codec.encode(many)


def _stored(user: str, n: int, version: str = "tt1") -> CandidateList:
    return CandidateList(
        user_id=user,
        model_version=version,
        items=[
            Candidate(item_id=f"{user}-{i}", score=1.0 / (i + 1), sources=["t"]) for i in range(n)
        ],
    )


def test_many_lists_read_at_once_give_what_each_read_gives():
    lists = [_stored("a", 30), _stored("b", 0), _stored("c", 1, "tt2"), _stored("d", 500)]
    raws: list[bytes | None] = [candidate_codec.encode(v) for v in lists]
    raws.insert(2, None)  # a user with nothing stored
    raws.append(lists[0].model_dump_json().encode())  # a value stored as JSON
    batch = candidate_codec.read_ranked_many(raws)
    assert batch.found == [True, True, False, True, True, True]
    assert batch.errors == [None] * 6
    for m, raw in enumerate(raws):
        ids, scores = batch.member(m)
        if raw is None:
            assert ids == [] and len(scores) == 0
            continue
        one = candidate_codec.read_ranked(raw)
        assert ids == one.item_ids
        assert scores.tolist() == one.scores
        assert batch.model_versions[m] == one.model_version


def test_a_malformed_list_fails_alone_in_a_batch():
    good = candidate_codec.encode(_stored("a", 5))
    short = good[:-3]  # its ids end early: the header's byte count disagrees
    fewer_ids = candidate_codec.encode(_stored("b", 3)).replace(b"\x1f", b"-", 1)
    batch = candidate_codec.read_ranked_many([good, b"junk", short, fewer_ids, good])
    assert [e is None for e in batch.errors] == [True, False, False, False, True]
    for m in (1, 2, 3):
        with pytest.raises(SchemaError):
            candidate_codec.read_ranked([good, b"junk", short, fewer_ids, good][m])
        assert batch.member(m)[0] == []
    assert batch.member(0)[0] == batch.member(4)[0] == candidate_codec.read_ranked(good).item_ids
