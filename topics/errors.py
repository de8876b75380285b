"""Errors of the topic contracts."""

from streamrec.errors import StreamRecError


class TopicError(StreamRecError):
    """A topic could not be created, altered or described."""


class SchemaError(StreamRecError):
    """A message does not match its topic's schema; `reason` says why, for the dead-letter topic."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
