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


class TopicReadError(StreamRecError):
    """A topic could not be read (unknown topic, broker unreachable, partition error)."""


class TopicReadTimeout(TopicReadError):
    """A topic was not read to its end offsets in time; the message names the partitions."""
