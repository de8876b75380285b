"""The ranker from the model registry, behind the `serving.ports.Ranker` interface.

Responsibilities: pick the device (`auto`: cuda when torch sees one), load a registry version
of kind "ranker" through the models' inference API (`models.ranker.RankerModel`; compiled to a
TorchScript graph unless `serving.ranker_compiled` is off, ADR 0047), and turn a
batch of `RankInput`s into one `score_batch` call; torch and loading errors become
`DependencyError`s of the "model" dependency. It also carries the version's training
feature profile (None for a version without one) and gives the dense inputs of a batch, for
the skew check (`serving/skew_sampler.py`, ADR 0131).
"""

from __future__ import annotations

import numpy as np

from streamrec.models.feature_profile import FeatureProfile, load_profile
from streamrec.models.registry import ModelVersion
from streamrec.serving.errors import DependencyError
from streamrec.serving.ports import RankInput

RANKER_KIND = "ranker"


def pick_device(setting: str) -> str:
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class RegistryRanker:
    """One loaded registry version of the ranker."""

    def __init__(self, version: ModelVersion, device: str, compiled: bool = True) -> None:
        from streamrec.models.ranker import RankerModel

        self.model_version = version
        self.device = device
        try:
            self.model = RankerModel.load(version.path, device=device, compiled=compiled)
        except Exception as exc:  # a corrupt or incompatible version must not kill serving
            raise DependencyError("model", f"cannot load ranker {version.version}: {exc}") from exc
        self.feature_profile: FeatureProfile | None = load_profile(version.path)

    @property
    def version(self) -> str:
        return self.model_version.version

    def score(self, batch: list[RankInput]) -> list[np.ndarray]:
        try:
            return self.model.score_batch(
                [inp.user for inp in batch], [inp.item_ids for inp in batch]
            )
        except Exception as exc:
            raise DependencyError("model", f"scoring failed: {exc}") from exc

    def score_with_features(self, batch: list[RankInput]) -> tuple[list[np.ndarray], np.ndarray]:
        """`score`, and the (pairs, features) dense inputs it ranked with, in the profile's
        order, from the same pass of the model."""
        try:
            return self.model.score_batch_with_features(
                [inp.user for inp in batch], [inp.item_ids for inp in batch]
            )
        except Exception as exc:
            raise DependencyError("model", f"scoring failed: {exc}") from exc
