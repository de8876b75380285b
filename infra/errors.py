"""Errors of the local stack (`streamrec up | down | status`) and of the settings."""

from streamrec.errors import ConfigError, StreamRecError


class StackError(StreamRecError):
    """The local stack could not be started, stopped or reached."""


class MissingProgramError(StackError):
    """A system program the stack needs is not installed; the message says how to install it."""


class PortInUseError(StackError):
    """A port the stack wants is already taken by another process."""


class StartTimeoutError(StackError):
    """A part did not answer within the start timeout; the message names its log."""


class SettingsError(ConfigError):
    """A setting is unknown or invalid; the message names it (an unknown one with the closest
    valid name) and never its value, which may be a secret."""
