"""Errors of the features area.

StreamRecError
└── FeatureError
    ├── FeatureStoreError   Feast or its Redis online store failed or is misconfigured
    └── BackfillError       the features backfill could not read the log or write Parquet
"""

from streamrec.errors import StreamRecError


class FeatureError(StreamRecError):
    """Base of the features area's errors."""


class FeatureStoreError(FeatureError):
    """Feast (registry, online or offline store) failed; the message says which call."""


class BackfillError(FeatureError):
    """The backfill could not read the event log or write the offline files."""
