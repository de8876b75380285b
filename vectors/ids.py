"""Stable int64 ids for item ids: FAISS stores int64, the catalog uses strings.

The id is a hash of the item id (63 bits of blake2b), so it is the same in every snapshot
and after every rebuild, whatever order the topic is read in; the snapshot still keeps the
explicit mapping, and the table refuses a (practically impossible) clash.
"""

from __future__ import annotations

import hashlib

_MASK = (1 << 63) - 1


def faiss_id(item_id: str) -> int:
    return (
        int.from_bytes(hashlib.blake2b(item_id.encode(), digest_size=8).digest(), "little") & _MASK
    )
