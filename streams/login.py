"""Why a Kafka client could not connect, when the broker refused its login or certificate.

librdkafka reports a refused SASL login or a failed TLS handshake only through `error_cb`;
a call that then times out raises a bare "broker transport failure". A `LoginWatch` given
as a client's `error_cb` keeps the last such reason (served by the client's next poll), so
that the error shown can name it (librdkafka's text names the mechanism, never the password).
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError

_LOGIN_CODES = frozenset({KafkaError._AUTHENTICATION, KafkaError._SSL})


class LoginWatch:
    """An `error_cb` that keeps the last authentication or TLS failure."""

    def __init__(self) -> None:
        self.refused: str | None = None

    def __call__(self, error: KafkaError) -> None:
        if error.code() in _LOGIN_CODES:
            self.refused = error.str()

    def explain(self, client: Any, username: str) -> str | None:
        """The refusal as a sentence naming the settings to check, or None. `client`'s
        callbacks are served first: librdkafka queues them until a poll."""
        client.poll(0)
        if self.refused is None:
            return None
        if "SSL" in self.refused and "SASL" not in self.refused:
            return (
                f"the TLS handshake failed ({self.refused}): check STREAMREC_KAFKA__CA_FILE "
                "(empty: the CA that `streamrec up --secure` generated)"
            )
        return (
            f"the broker refused the login of {username!r} ({self.refused}): check "
            "STREAMREC_KAFKA__USERNAME, STREAMREC_KAFKA__PASSWORD and "
            "STREAMREC_KAFKA__SASL_MECHANISM"
        )
