from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamrec.infra.settings import Settings
from streamrec.vectors import VectorTable


def unit_rows(n: int, dim: int = 32, seed: int = 0, clusters: int = 8) -> np.ndarray:
    """Clustered unit vectors (recall on uniform noise says little about real embeddings)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    rows = centres[rng.integers(0, clusters, n)] + 0.5 * rng.normal(size=(n, dim))
    rows = rows.astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def table_of(rows: np.ndarray, prefix: str = "i") -> VectorTable:
    table = VectorTable()
    for i, row in enumerate(rows):
        table.upsert(f"{prefix}{i}", row)
    return table


@pytest.fixture
def index_settings(tmp_path: Path) -> Settings:
    return Settings().with_overrides(stack={"state_dir": tmp_path}, index={"reader_poll_s": 0})
