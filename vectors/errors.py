"""Errors of the vector index and its snapshots.

StreamRecError
└── VectorIndexError          the index cannot do what was asked (dimension, id clash)
    ├── SnapshotRejected      a built snapshot failed validation; it was not published
    └── NoSnapshot            no valid snapshot is available to read
"""

from streamrec.errors import StreamRecError


class VectorIndexError(StreamRecError):
    """The vector index cannot do what was asked (wrong dimension, item id hash clash)."""


class SnapshotRejected(VectorIndexError):
    """A snapshot failed validation (checksum, item count, recall) and was not published."""


class NoSnapshot(VectorIndexError):
    """No valid index snapshot exists (yet) for a reader to load."""
