"""The item table the models read: ids, genres, year, popularity and content vectors.

Responsibilities:
- map item ids to dense indices (index 0 is padding, so item i of `ids` has index i + 1);
- hold per-item features as numpy arrays (genre multi-hot, normalised year, popularity and
  mean rating as of the end of the training window, L2-normalised content vectors);
- save to and load from a version directory (`items.npz`), so a model carries the exact
  item features it was trained with and serving keeps them in memory (NOTES: Feast per-item
  lookups are too slow for 500 candidates).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamrec.models.errors import ModelLoadError
from streamrec.streams.sources.movielens import GENRES
from streamrec.topics import CatalogItem

GENRE_INDEX = {g: i for i, g in enumerate(GENRES)}
N_GENRES = len(GENRES)


@dataclass
class ItemTable:
    ids: np.ndarray  # (n,) str
    genres: np.ndarray  # (n, N_GENRES) float32 multi-hot
    year: np.ndarray  # (n,) float32 in [0, 1]
    popularity: np.ndarray  # (n,) float32 interactions in the training window
    mean_rating: np.ndarray  # (n,) float32, 0 when unrated
    content: np.ndarray  # (n, d) float32, L2-normalised

    def __post_init__(self) -> None:
        self.index = {str(item): i + 1 for i, item in enumerate(self.ids.tolist())}

    def __len__(self) -> int:
        return len(self.ids)

    def indices(self, item_ids: list[str]) -> np.ndarray:
        """Dense indices (1-based) of known items; unknown ids are dropped."""
        return np.asarray([self.index[i] for i in item_ids if i in self.index], dtype=np.int64)

    def indices_or_zero(self, item_ids: list[str]) -> np.ndarray:
        """Dense indices with 0 (padding) for unknown ids, keeping positions."""
        return np.asarray([self.index.get(i, 0) for i in item_ids], dtype=np.int64)

    def item_id(self, index: int) -> str:
        return str(self.ids[index - 1])

    def padded(self, array: np.ndarray) -> np.ndarray:
        """`array` with a zero row in front, so it can be indexed by dense index."""
        pad = np.zeros((1, *array.shape[1:]), dtype=array.dtype)
        return np.concatenate([pad, array], axis=0)

    def save(self, directory: Path) -> None:
        np.savez(
            directory / "items.npz",
            ids=self.ids.astype(str),
            genres=self.genres,
            year=self.year,
            popularity=self.popularity,
            mean_rating=self.mean_rating,
            content=self.content,
        )

    @classmethod
    def load(cls, directory: Path) -> ItemTable:
        path = directory / "items.npz"
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(**{k: z[k] for k in z.files})
        except (OSError, KeyError, ValueError) as exc:
            raise ModelLoadError(f"cannot load the item table {path}: {exc}") from exc


def build_item_table(
    items: list[CatalogItem],
    content: np.ndarray,
    popularity: dict[str, float],
    mean_rating: dict[str, float],
) -> ItemTable:
    n = len(items)
    genres = np.zeros((n, N_GENRES), dtype=np.float32)
    year = np.zeros(n, dtype=np.float32)
    for row, item in enumerate(items):
        for g in item.genres:
            if g in GENRE_INDEX:
                genres[row, GENRE_INDEX[g]] = 1.0
        if item.year is not None:
            year[row] = np.clip((item.year - 1920) / 80.0, 0.0, 1.0)
    ids = np.asarray([i.item_id for i in items])
    return ItemTable(
        ids=ids,
        genres=genres,
        year=year,
        popularity=np.asarray([popularity.get(i, 0.0) for i in ids], dtype=np.float32),
        mean_rating=np.asarray([mean_rating.get(i, 0.0) for i in ids], dtype=np.float32),
        content=np.ascontiguousarray(content, dtype=np.float32),
    )
