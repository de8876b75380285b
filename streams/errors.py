"""Errors of the stream tools (replay, data fetch, producers)."""

from streamrec.errors import StreamRecError


class ReplayError(StreamRecError):
    """A replay could not run or stopped (e.g. --strict on a malformed row)."""


class DataError(StreamRecError):
    """A dataset could not be fetched or read."""


class DeliveryError(StreamRecError):
    """The broker did not acknowledge produced messages."""


class LagError(StreamRecError):
    """Consumer lag could not be read from the broker."""
