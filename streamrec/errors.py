"""The root of StreamRec's exceptions.

Every area has its own exceptions module whose classes derive from `StreamRecError`, so a
caller (the CLI, the serving fallback chain) can catch one root. Adapters translate the
underlying library's errors (confluent-kafka, redis, feast) into these at the boundary.

    StreamRecError
    ├── ConfigError              settings that cannot work
    ├── infra.errors.StackError  the local stack (missing program, port taken, start failed)
    ├── topics.errors.SchemaError / TopicError
    └── streams.errors.ReplayError / DataError
"""


class StreamRecError(Exception):
    """Base class of every error StreamRec raises on purpose."""


class ConfigError(StreamRecError):
    """The configuration cannot work (e.g. a DSN of an unknown scheme)."""
