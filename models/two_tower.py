"""The two-tower retrieval network (torch modules and their input encoding).

Responsibilities:
- `ItemTower`: an item from its id embedding, its content vector (MiniLM, frozen) and its
  genres/year, to a unit vector;
- `UserTower`: a user from their history (mean of item embeddings), their session (the
  latest `session_len` items) and two aggregates, to a unit vector. It has no user-id
  embedding, so it scores users it never saw in training (cold start, the live stream);
- `AttentionUserTower`: the same inputs and output, from causal self-attention over the
  ordered history (SASRec-like); `sequence` gives the vector after every position, which
  its training loss reads; `TwoTowerConfig.user_tower` picks one of the two;
- `encode_histories`: lists of item ids to the padded index tensor the user tower reads
  (left padded, so the session is the last columns).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import nn

from streamrec.models.items import N_GENRES, ItemTable


class TwoTowerConfig(BaseModel):
    n_items: int
    content_dim: int
    dim: int = 64
    id_dim: int = 32
    history_len: int = 50
    session_len: int = 5
    # Versions saved before the attention tower have none of the fields below: "mean".
    user_tower: Literal["mean", "attention"] = "mean"
    blocks: int = Field(2, ge=1, description="attention tower: transformer blocks")
    heads: int = Field(1, ge=1, description="attention tower: heads (dim must divide)")
    dropout: float = Field(0.5, ge=0.0, lt=1.0, description="attention tower: dropout")


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

    def sequence(self, history: torch.Tensor, aggregates: torch.Tensor) -> torch.Tensor:
        """(B, H, dim) vectors after each position (running means); aggregates: (B, H, 2)."""
        emb = self.inputs(history)
        pooled, session = _masked_means(emb, (history > 0).unsqueeze(-1).float(), self.session_len)
        return F.normalize(self.mlp(torch.cat([pooled, session, aggregates], dim=-1)), dim=-1)


def _masked_means(
    emb: torch.Tensor, mask: torch.Tensor, window: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal means after every position: of all items so far, and of the latest `window`.

    emb: (B, H, E); mask: (B, H, 1) floats, 1 on items. Running sums, so (B, H, E) each."""
    total = (emb * mask).cumsum(1)
    count = mask.cumsum(1)
    shifted = F.pad(total, (0, 0, window, 0))[:, : -window or None]
    c_shifted = F.pad(count, (0, 0, window, 0))[:, : -window or None]
    pooled = total / count.clamp(min=1.0)
    session = (total - shifted) / (count - c_shifted).clamp(min=1.0)
    return pooled, session


class _Block(nn.Module):
    """Pre-norm transformer block: masked self-attention, then a position-wise MLP."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """x: (B, H, D); allowed: (B, 1, H, H) bools, True where a query may read a key."""
        b, h, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, h, 3, self.heads, d // self.heads).unbind(2)
        att = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=allowed,
            dropout_p=self.dropout if self.training else 0.0,
        )
        x = x + self.drop(self.out(att.transpose(1, 2).reshape(b, h, d)))
        return x + self.drop(self.ffn(self.norm2(x)))


class AttentionUserTower(nn.Module):
    """A user from causal self-attention over their ordered history (SASRec-like).

    Item inputs as in `UserTower` (id embedding + projected content vector), plus a learned
    embedding of each slot counted from the newest item (left padding then changes nothing);
    each position reads itself and the items before it, never padding. The output at the
    newest position, beside the running history/session means and the aggregates, goes
    through an MLP to a unit vector. Same forward signature as `UserTower`."""

    def __init__(self, cfg: TwoTowerConfig, content: torch.Tensor) -> None:
        super().__init__()
        if cfg.dim % cfg.heads:
            raise ValueError(f"dim {cfg.dim} is not a multiple of heads {cfg.heads}")
        self.session_len = cfg.session_len
        self.history_len = cfg.history_len
        self.inputs = _ItemInputs(cfg, content)
        self.proj = nn.Linear(2 * cfg.id_dim, cfg.dim)
        self.positions = nn.Embedding(cfg.history_len, cfg.dim)
        nn.init.normal_(self.positions.weight, std=0.02)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            _Block(cfg.dim, cfg.heads, cfg.dropout) for _ in range(cfg.blocks)
        )
        self.norm = nn.LayerNorm(cfg.dim)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.dim + 4 * cfg.id_dim + 2, 128), nn.ReLU(), nn.Linear(128, cfg.dim)
        )

    def _encode(self, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(attention output, running history mean, running session mean), each (B, H, .)."""
        history = history[:, -self.history_len :]
        width = history.shape[1]
        emb = self.inputs(history)
        valid = history > 0
        mask = valid.unsqueeze(-1).float()
        # Slot j of a row of `width` is (width - 1 - j) items before the newest one.
        slots = torch.arange(width - 1, -1, -1, device=history.device)
        x = self.drop((self.proj(emb) + self.positions(slots)) * mask)
        causal = torch.ones(width, width, dtype=torch.bool, device=history.device).tril()
        # A padding query reads only itself, so no softmax row is empty (no NaN).
        eye = torch.eye(width, dtype=torch.bool, device=history.device)
        allowed = ((causal & valid[:, None, :]) | eye).unsqueeze(1)
        for block in self.blocks:
            x = block(x, allowed)
        x = self.norm(x) * mask
        pooled, session = _masked_means(emb, mask, self.session_len)
        return x, pooled, session

    def sequence(self, history: torch.Tensor, aggregates: torch.Tensor) -> torch.Tensor:
        """(B, H, dim) unit vectors after each position; aggregates: (B, H, 2), each
        position's own (its count and mean rating so far)."""
        x, pooled, session = self._encode(history)
        return F.normalize(self.mlp(torch.cat([x, pooled, session, aggregates], dim=-1)), dim=-1)

    def forward(self, history: torch.Tensor, aggregates: torch.Tensor) -> torch.Tensor:
        """history: (B, H) dense indices, left padded; aggregates: (B, 2)."""
        x, pooled, session = self._encode(history)
        last = torch.cat([x[:, -1], pooled[:, -1], session[:, -1], aggregates], dim=-1)
        return F.normalize(self.mlp(last), dim=-1)


class TwoTower(nn.Module):
    def __init__(self, cfg: TwoTowerConfig, table: ItemTable) -> None:
        super().__init__()
        self.cfg = cfg
        content = torch.from_numpy(table.padded(table.content))
        side = torch.from_numpy(
            table.padded(np.concatenate([table.genres, table.year[:, None]], axis=1))
        )
        assert side.shape[1] == N_GENRES + 1
        self.user: UserTower | AttentionUserTower = (
            AttentionUserTower(cfg, content)
            if cfg.user_tower == "attention"
            else UserTower(cfg, content)
        )
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
