"""The vector index: a working table of item vectors, FAISS snapshots, and their readers."""

from streamrec.vectors.errors import NoSnapshot, SnapshotRejected, VectorIndexError
from streamrec.vectors.reader import IndexReader, LoadedSnapshot
from streamrec.vectors.snapshots import SnapshotInfo, SnapshotStore
from streamrec.vectors.table import VectorTable

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
