"""The hot path's Value decoding returns what Feast's own decoding returns, for every kind."""

from __future__ import annotations

import pytest
from feast.protos.feast.types.Value_pb2 import Value
from feast.type_map import feast_value_type_to_python_type

from streamrec.features.user_reader import python_value

VALUES = [
    Value(int32_val=-7),
    Value(int64_val=1_797_000_000_123),
    Value(float_val=0.25),
    Value(double_val=3.5),
    Value(string_val="Comedy"),
    Value(bool_val=True),
    Value(bytes_val=b"\x00\x01"),
    Value(int64_list_val={"val": [1, 2, 3]}),
    Value(float_list_val={"val": [0.5, 0.25]}),
    Value(double_list_val={"val": []}),
    Value(string_list_val={"val": ["a", "b"]}),
    Value(bool_list_val={"val": [True, False]}),
    Value(unix_timestamp_val=1_797_000_000),  # not read directly: Feast's function decodes it
    Value(unix_timestamp_list_val={"val": [1_797_000_000]}),
    Value(),  # no kind set
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: v.WhichOneof("val") or "unset")
def test_every_kind_decodes_as_feast_decodes_it(value: Value) -> None:
    got = python_value(value.SerializeToString())
    want = feast_value_type_to_python_type(Value.FromString(value.SerializeToString()))
    assert got == want
    assert type(got) is type(want)
