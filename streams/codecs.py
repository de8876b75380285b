"""Codecs: pydantic events to bytes and back.

JSON values are written by pydantic-core's serializer. Vectors use a compact binary layout
instead of JSON lists (a 384-d float32 vector is 1,536 bytes rather than ~8 KB of text):

    b"SRV1" | u16 header length | orjson header (all fields but the vector) | raw floats

Decoding errors raise `SchemaError` with a reason fit for the dead-letter topic.
"""

from __future__ import annotations

import struct
from typing import TypeVar

import numpy as np
import orjson
from pydantic import ValidationError

from streamrec.topics import ItemVector, TopicSpec
from streamrec.topics.base import Event
from streamrec.topics.errors import SchemaError

E = TypeVar("E", bound=Event)

_VECTOR_MAGIC = b"SRV1"
_HEADER_LEN = struct.Struct("<H")


def encode_json(event: Event) -> bytes:
    # pydantic-core writes JSON directly: ~3x faster than model_dump + orjson on the replay path.
    return event.__pydantic_serializer__.to_json(event)


def decode_json(schema: type[E], value: bytes | None) -> E:
    if value is None:
        raise SchemaError("empty value (tombstone) where an event was expected")
    try:
        return schema.model_validate_json(value)
    except ValidationError as exc:
        raise SchemaError(validation_reason(exc)) from None


def encode_vector(event: ItemVector) -> bytes:
    header = orjson.dumps(event.model_dump(mode="json", exclude={"vector"}))
    return _VECTOR_MAGIC + _HEADER_LEN.pack(len(header)) + header + event.vector


def decode_vector(value: bytes | None) -> ItemVector:
    if value is None:
        raise SchemaError("tombstone: the item was removed")
    if len(value) < 6 or value[:4] != _VECTOR_MAGIC:
        raise SchemaError("not a StreamRec vector (bad magic)")
    (n,) = _HEADER_LEN.unpack_from(value, 4)
    try:
        header = orjson.loads(value[6 : 6 + n])
        return ItemVector.model_validate({**header, "vector": value[6 + n :]})
    except orjson.JSONDecodeError as exc:
        raise SchemaError(f"vector header is not JSON: {exc}") from None
    except ValidationError as exc:
        raise SchemaError(validation_reason(exc)) from None


def vector_to_numpy(event: ItemVector) -> np.ndarray:
    return np.frombuffer(event.vector, dtype="<f4" if event.dtype == "float32" else "<f2")


def vector_bytes(array: np.ndarray, dtype: str = "float32") -> bytes:
    return np.ascontiguousarray(array, dtype="<f4" if dtype == "float32" else "<f2").tobytes()


def encode(spec: TopicSpec, event: Event) -> bytes:
    """Encode an event for `spec`'s topic, refusing an event of another schema."""
    if not isinstance(event, spec.schema):
        raise SchemaError(f"{type(event).__name__} is not {spec.name}'s {spec.schema.__name__}")
    if spec.value_format == "vector":
        return encode_vector(event)  # type: ignore[arg-type]
    return encode_json(event)


def decode(spec: TopicSpec, value: bytes | None) -> Event:
    if spec.value_format == "vector":
        return decode_vector(value)
    return decode_json(spec.schema, value)


def validation_reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "<value>"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)
