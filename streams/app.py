"""The one composition root for stream processors: a Faust app built from the settings.

Processors receive the app and declare their agents on it; `streamrec worker NAME` imports a
known module list (processors.registry) rather than autodiscovering. Messages travel as raw
bytes and are decoded by `streams.codecs` inside the agent, so a malformed message becomes a
dead letter with its reason instead of an exception in Faust's deserializer.
"""

from __future__ import annotations

import ssl
import weakref
from typing import Any

import faust

from streamrec.infra.settings import Settings
from streamrec.streams import rebalance_guard
from streamrec.streams.membership import faust_membership
from streamrec.streams.partitions import partition_counts
from streamrec.topics import ALL_TOPICS, TopicSpec

# Each app's effective partition counts (`streams.partitions`), so that a topic and the
# tables keyed from it are declared with what `topics apply` gave the topic.
_COUNTS: weakref.WeakKeyDictionary[faust.App, dict[str, int]] = weakref.WeakKeyDictionary()


def _store_url() -> str:
    try:
        import rocksdict  # noqa: F401

        # faust's "rocksdb" store uses rocksdict when it is importable; "rocksdict://" is
        # not a registered store URL (faust fails with "'module' object is not callable").
        return "rocksdb://"
    except ImportError:  # pragma: no cover - rocksdict ships wheels for our platforms
        return "memory://"


def broker_credentials(settings: Settings) -> faust.SASLCredentials:
    """SCRAM over TLS, verified against the settings' CA (aiokafka under Faust)."""
    k = settings.kafka
    return faust.SASLCredentials(
        username=k.username,
        password=k.password.get_secret_value(),
        ssl_context=ssl.create_default_context(cafile=settings.kafka_ca_file),
        mechanism=k.sasl_mechanism,
    )


def create_app(settings: Settings, app_id: str, **overrides: Any) -> faust.App:
    """A Faust app for `app_id` (its consumer group), state under the state dir."""
    datadir = settings.state_dir / "faust" / app_id
    datadir.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "broker": f"kafka://{settings.kafka_bootstrap}",
        "store": _store_url(),
        "datadir": str(datadir),
        "key_serializer": "raw",
        "value_serializer": "raw",
        "topic_partitions": settings.kafka.default_partitions,
        "topic_replication_factor": settings.replication_factor,
        "topic_allow_declare": True,
        "web_enabled": False,
        "producer_linger_ms": 1,
        "consumer_auto_offset_reset": "earliest",
        "stream_wait_empty": False,
        # A short session and, with a slot, static membership: a killed worker's restart
        # does not wait a minute for its group (streams.membership).
        **faust_membership(settings, app_id),
    }
    if settings.kafka.security_protocol == "SASL_SSL":
        config["broker_credentials"] = broker_credentials(settings)
    config.update(overrides)
    app = faust.App(app_id, **config)
    _COUNTS[app] = partition_counts(settings, ALL_TOPICS)
    # faust's fetcher can deliver records fetched before a rebalance after it, which stalls
    # or skips partitions (see streams.rebalance_guard).
    rebalance_guard.install(app)
    return app


def partitions_for(app: faust.App, spec: TopicSpec) -> int | None:
    """`spec`'s partitions as `topics apply` gives them (`kafka.partitions` over the spec): a
    table keyed from the topic takes this count, so its changelog is co-partitioned with it."""
    counts = _COUNTS.get(app, {})
    return counts.get(spec.name, spec.partitions)


def faust_topic(app: faust.App, spec: TopicSpec) -> faust.TopicT:
    """Declare a contract topic in Faust with the same partitions as `topics apply` gives it."""
    return app.topic(
        spec.name,
        key_type=bytes,
        value_type=bytes,
        partitions=partitions_for(app, spec),
        internal=False,
    )
