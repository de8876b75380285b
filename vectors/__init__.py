"""The vector index: a working table of item vectors, FAISS snapshots, and their readers."""

from vectors.errors import NoSnapshot, SnapshotRejected, VectorIndexError
from vectors.reader import IndexReader, LoadedSnapshot
from vectors.snapshots import SnapshotInfo, SnapshotStore
from vectors.table import VectorTable

__all__ = [
    "IndexReader",
    "LoadedSnapshot",
    "NoSnapshot",
    "SnapshotInfo",
    "SnapshotRejected",
    "SnapshotStore",
    "VectorIndexError",
    "VectorTable",
]
