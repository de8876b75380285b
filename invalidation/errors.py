"""Errors of the invalidation processor."""

from streamrec.errors import StreamRecError


class InvalidationError(StreamRecError):
    """The invalidation processor cannot act on a change (e.g. vectors of mixed dimensions)."""
