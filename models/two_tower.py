"""The two-tower retrieval network (torch modules and their input encoding).

Responsibilities:
- `ItemTower`: an item from its id embedding, its content vector (MiniLM, frozen) and its
  genres/year, to a unit vector;
- `UserTower`: a user from their history (mean of item embeddings), their session (the
  latest `session_len` items) and two aggregates, to a unit vector. It has no user-id
  embedding, so it scores users it never saw in training (cold start, the live stream);
- `encode_histories`: lists of item ids to the padded index tensor the user tower reads
  (left padded, so the session is the last columns).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel
from torch import nn

from streamrec.models.items import N_GENRES, ItemTable


class TwoTowerConfig(BaseModel):
    n_items: int
    content_dim: int
    dim: int = 64
    id_dim: int = 32
    history_len: int = 50
    session_len: int = 5


class _ItemInputs(nn.Module):
    """Id embedding + projected content vector of items, by dense index (0 = padding)."""

    def __init__(self, cfg: TwoTowerConfig, content: torch.Tensor) -> None:
        super().__init__()
        self.ids = nn.Embedding(cfg.n_items + 1, cfg.id_dim, padding_idx=0)
        nn.init.normal_(self.ids.weight, std=0.05)
        self.register_buffer("content", content, persistent=False)
        self.content_proj = nn.Linear(cfg.content_dim, cfg.id_dim)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        # Project the (small) content table once, then gather: far cheaper than projecting
        # every history position's 384-d vector.
        projected = self.content_proj(self.content)
        # F.embedding rather than `projected[idx]`: its backward accumulates in a fixed order
        # (advanced indexing's index_put_ is not deterministic across CPU threads).
        return torch.cat([self.ids(idx), F.embedding(idx, projected)], dim=-1)


class ItemTower(nn.Module):
    def __init__(self, cfg: TwoTowerConfig, content: torch.Tensor, side: torch.Tensor) -> None:
        super().__init__()
        self.inputs = _ItemInputs(cfg, content)
        self.register_buffer("side", side, persistent=False)  # genres + year, by index
        self.mlp = nn.Sequential(
            nn.Linear(2 * cfg.id_dim + side.shape[1], 128), nn.ReLU(), nn.Linear(128, cfg.dim)
        )

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.inputs(idx), self.side[idx]], dim=-1)
        return F.normalize(self.mlp(x), dim=-1)


class UserTower(nn.Module):
    def __init__(self, cfg: TwoTowerConfig, content: torch.Tensor) -> None:
        super().__init__()
        self.session_len = cfg.session_len
        self.inputs = _ItemInputs(cfg, content)
        self.mlp = nn.Sequential(
            nn.Linear(4 * cfg.id_dim + 2, 128), nn.ReLU(), nn.Linear(128, cfg.dim)
        )

    def forward(self, history: torch.Tensor, aggregates: torch.Tensor) -> torch.Tensor:
        """history: (B, H) dense indices, left padded; aggregates: (B, 2)."""
        emb = self.inputs(history)
        mask = (history > 0).unsqueeze(-1).float()
        pooled = (emb * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        s_emb, s_mask = emb[:, -self.session_len :], mask[:, -self.session_len :]
        session = (s_emb * s_mask).sum(1) / s_mask.sum(1).clamp(min=1.0)
        x = torch.cat([pooled, session, aggregates], dim=-1)
        return F.normalize(self.mlp(x), dim=-1)


class TwoTower(nn.Module):
    def __init__(self, cfg: TwoTowerConfig, table: ItemTable) -> None:
        super().__init__()
        self.cfg = cfg
        content = torch.from_numpy(table.padded(table.content))
        side = torch.from_numpy(
            table.padded(np.concatenate([table.genres, table.year[:, None]], axis=1))
        )
        assert side.shape[1] == N_GENRES + 1
        self.user = UserTower(cfg, content)
        self.item = ItemTower(cfg, content, side)

    def all_items(self) -> torch.Tensor:
        """(n_items + 1, dim): row 0 is padding (zeros)."""
        idx = torch.arange(self.cfg.n_items + 1, device=self.item.side.device)
        vectors = self.item(idx)
        vectors[0] = 0.0
        return vectors


def aggregates(n_interactions: list[int], mean_rating: list[float | None]) -> np.ndarray:
    """The user tower's two scalar inputs, scaled to about [0, 1]."""
    n = np.log1p(np.asarray(n_interactions, dtype=np.float32)) / 6.0
    r = np.asarray(
        [0.0 if (m is None or m != m) else m / 5.0 for m in mean_rating], dtype=np.float32
    )
    return np.stack([n, r], axis=1)


def encode_histories(table: ItemTable, histories: list[list[str]], length: int) -> np.ndarray:
    """(B, length) int64 dense indices, left padded with 0; unknown items are dropped."""
    out = np.zeros((len(histories), length), dtype=np.int64)
    for row, items in enumerate(histories):
        idx = table.indices(items)[-length:]
        if len(idx):
            out[row, length - len(idx) :] = idx
    return out
