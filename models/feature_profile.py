"""The ranker's reference feature distribution, saved with each version (`feature_profile.json`).

Responsibilities:
- `build_profile`: per numeric input feature, fixed bin edges (the deciles of the training
  values, deduplicated, so a feature with few distinct values gets fewer bins) and the
  training share of each bin;
- `bin_counts`: values counted into a profile's bins, the one binning rule training and
  serving share (bin i holds edges[i-1] <= x < edges[i]; the outer bins are open);
- `save_profile` / `load_profile`: the file beside the manifest (covered by the version's
  checksum); a version trained before profiles existed has none (`None`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field, ValidationError

log = logging.getLogger(__name__)
PROFILE_FILE = "feature_profile.json"
DECILES = np.linspace(0.1, 0.9, 9)


class FeatureBins(BaseModel):
    """One feature's training distribution over fixed bins (len(edges) + 1 of them)."""

    name: str
    edges: list[float] = Field(description="ascending interior cut points")
    shares: list[float] = Field(description="training share per bin, summing to 1")


class FeatureProfile(BaseModel):
    rows: int = Field(description="training (user, candidate) pairs the profile was built on")
    features: list[FeatureBins]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]


def _edges(values: np.ndarray) -> np.ndarray:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return np.zeros(0)
    return np.unique(np.quantile(finite, DECILES))


def bin_counts(edges: Sequence[np.ndarray], values: np.ndarray) -> list[np.ndarray]:
    """Counts of each column of `values` (rows, features) in its feature's bins; NaNs are
    left out (a NaN input is a bug elsewhere, not a distribution)."""
    out = []
    for col, e in enumerate(edges):
        v = values[:, col]
        v = v[~np.isnan(v)]
        out.append(np.bincount(np.searchsorted(e, v, side="right"), minlength=len(e) + 1))
    return out


def build_profile(values: np.ndarray, names: Sequence[str]) -> FeatureProfile:
    """The profile of a training matrix (rows, len(names))."""
    if values.ndim != 2 or values.shape[1] != len(names):
        raise ValueError(f"expected (rows, {len(names)}) values, got {values.shape}")
    edges = [_edges(values[:, c].astype(np.float64)) for c in range(len(names))]
    counts = bin_counts(edges, values.astype(np.float64))
    features = [
        FeatureBins(
            name=name,
            edges=e.tolist(),
            shares=(c / max(int(c.sum()), 1)).tolist(),
        )
        for name, e, c in zip(names, edges, counts, strict=True)
    ]
    return FeatureProfile(rows=len(values), features=features)


def save_profile(directory: Path, profile: FeatureProfile) -> None:
    (directory / PROFILE_FILE).write_text(profile.model_dump_json())


def load_profile(directory: Path) -> FeatureProfile | None:
    """The version's profile, or None when it has none (or an unreadable one)."""
    try:
        return FeatureProfile.model_validate_json((directory / PROFILE_FILE).read_text())
    except FileNotFoundError:
        return None
    except ValidationError as exc:  # no skew check for this version, rather than no version
        log.warning("feature profile of %s not read: %s", directory, exc)
        return None
