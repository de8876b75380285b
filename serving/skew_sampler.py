"""A serving process's sample of the features it ranks with, in the training profile's bins.

Responsibilities:
- `BatchSampler`: which ranked batches are sampled: every 1/`serving.skew_sample`-th one
  (a running credit, so 0.05 is exactly one batch in 20 and 1.0 is every batch; no RNG);
- `SkewSampler`: counts the dense inputs of a sampled batch (returned by the same pass that
  scored it, `RankerModel.score_batch_with_features`, and binned on the skew thread after
  the answer is out) into the bins of the promoted version's `FeatureProfile`, in numpy
  arrays in memory; `snapshot` is the `SkewSample` the model manager's poller writes to
  Redis every `serving.skew_report_s` (one HSET per process and interval, nothing per
  request). A new promoted version gets a new sampler.
"""

from __future__ import annotations

import threading

import numpy as np

from streamrec.analytics.skew import SkewSample
from streamrec.models.feature_profile import FeatureProfile, bin_counts


class BatchSampler:
    """Says yes to a `share` of the calls, evenly spaced."""

    def __init__(self, share: float) -> None:
        self.share = share
        self._credit = 0.0

    def take(self) -> bool:
        if self.share <= 0:
            return False
        self._credit += self.share
        if self._credit >= 1.0 - 1e-9:  # float sums of 0.05 fall just short of 1
            self._credit -= 1.0
            return True
        return False


class SkewSampler:
    """Bin counts of one version's served features (thread-safe: the skew thread adds, the
    poller snapshots; the lock is held for one batch's array additions)."""

    def __init__(self, version: str, profile: FeatureProfile, worker: str) -> None:
        self.version = version
        self.worker = worker
        self.names = profile.names
        self._edges = [np.asarray(f.edges, dtype=np.float64) for f in profile.features]
        self._counts = [np.zeros(len(e) + 1, dtype=np.int64) for e in self._edges]
        self._lock = threading.Lock()
        self.batches = 0
        self.rows = 0

    def observe(self, values: np.ndarray) -> None:
        """Count a (rows, features) matrix whose columns are the profile's features."""
        if values.ndim != 2 or values.shape[1] != len(self.names) or not len(values):
            return
        counts = bin_counts(self._edges, values)  # outside the lock
        with self._lock:
            self.batches += 1
            self.rows += len(values)
            for total, c in zip(self._counts, counts, strict=True):
                total += c

    def snapshot(self) -> SkewSample:
        with self._lock:
            return SkewSample(
                version=self.version,
                worker=self.worker,
                batches=self.batches,
                rows=self.rows,
                counts={n: c.tolist() for n, c in zip(self.names, self._counts, strict=True)},
            )
