"""The DCN-V2-style ranker, and the small inference API serving loads (registry kind "ranker").

Responsibilities:
- `RankerInputs`: builds the feature tensor of (user, candidate) pairs on the model's device
  from the user's recent items and aggregates and the in-memory item table: the two-tower
  score, content similarity to the history and to the session, genre affinities, item
  popularity / mean rating / year, user aggregates, plus an item-id embedding. Training and
  serving build features with this same code, so they cannot drift apart;
- `DCNRanker`: cross network (full-rank DCN-V2 cross layers) in parallel with a small MLP;
- `RankerModel`: `load(version_dir, device, compiled)`, `score_batch(users, candidates)`,
  `version`. A ranker version directory is self-contained: the item table, the two-tower it
  scores with, and its own weights, so serving loads one directory.

Why serving scores with a TorchScript trace of the network (`compiled=True`, ADR 0047): the
eager forward pass is ~100 torch operations called from Python, each a point where a busy
event loop (another thread of the same process) can take the GIL and make the model wait a
switch interval (5 ms) for it back; a traced, frozen graph runs in C++ with the GIL released
from start to end, so the model thread competes for the GIL once per batch, and the graph
runs faster on its own (fused constants, no module dispatch). Training and evaluation keep
the eager module.

Unknown candidate ids (items newer than the model) score `UNKNOWN_SCORE`, below every
known item, instead of failing the request.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from streamrec.models.errors import ModelLoadError
from streamrec.models.features import UserFeatures
from streamrec.models.items import N_GENRES, ItemTable
from streamrec.models.two_tower import TwoTower, TwoTowerConfig, aggregates, encode_histories

UNKNOWN_SCORE = -1e9
# The dense inputs `RankerInputs.forward` stacks, in its order (the skew check's features).
DENSE_FEATURES = (
    "two_tower_score",
    "content_sim_history",
    "content_sim_session",
    "item_popularity",  # log1p(popularity) / 8
    "item_mean_rating",  # / 5
    "item_year",
    "user_interactions",  # log1p(n) / 6
    "user_mean_rating",  # / 5
    "genre_affinity_history",
    "genre_affinity_session",
    "rating_gap",  # item mean - user mean, both / 5
)
N_DENSE = len(DENSE_FEATURES)


class RankerConfig(BaseModel):
    n_items: int
    id_dim: int = 16
    cross_layers: int = 2
    hidden: int = 128

    @property
    def n_features(self) -> int:
        return N_DENSE + 3 * N_GENRES + self.id_dim


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


class RankerInputs(nn.Module):
    """Feature tensor (B, C, n_features) for users (B) and their candidates (B, C)."""

    def __init__(self, cfg: RankerConfig, table: ItemTable, two_tower: TwoTower) -> None:
        super().__init__()
        self.two_tower = two_tower
        for p in self.two_tower.parameters():
            p.requires_grad_(False)
        self.session_len = two_tower.cfg.session_len
        self.ids = nn.Embedding(cfg.n_items + 1, cfg.id_dim, padding_idx=0)
        nn.init.normal_(self.ids.weight, std=0.05)
        f32 = np.float32
        self.register_buffer("genres", torch.from_numpy(table.padded(table.genres)), False)
        self.register_buffer(
            "content", torch.from_numpy(table.padded(table.content).astype(f32)), False
        )
        self.register_buffer("year", torch.from_numpy(table.padded(table.year)), False)
        self.register_buffer("pop", torch.from_numpy(table.padded(table.popularity)), False)
        self.register_buffer("mean", torch.from_numpy(table.padded(table.mean_rating)), False)
        self.register_buffer("item_vecs", torch.zeros(cfg.n_items + 1, two_tower.cfg.dim), False)

    def refresh_item_vectors(self) -> None:
        with torch.no_grad():
            self.item_vecs = self.two_tower.all_items()

    @staticmethod
    def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (x * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def forward(
        self,
        history: torch.Tensor,  # (B, H) left padded
        aggs: torch.Tensor,  # (B, 2)
        cand: torch.Tensor,  # (B, C)
        item_pop: torch.Tensor | None = None,  # (B, C) point-in-time override (training)
        item_mean: torch.Tensor | None = None,
    ) -> torch.Tensor:
        with torch.no_grad():
            user_vec = self.two_tower.user(history, aggs)  # (B, d)
        mask = (history > 0).unsqueeze(-1).float()
        s_hist, s_mask = history[:, -self.session_len :], mask[:, -self.session_len :]
        c_hist = nn.functional.normalize(self._masked_mean(self.content[history], mask), dim=-1)
        c_sess = nn.functional.normalize(self._masked_mean(self.content[s_hist], s_mask), dim=-1)
        g_hist = self._masked_mean(self.genres[history], mask)  # (B, G)
        g_sess = self._masked_mean(self.genres[s_hist], s_mask)
        cand_content = self.content[cand]  # (B, C, D)
        cand_genres = self.genres[cand]  # (B, C, G)
        pop = self.pop[cand] if item_pop is None else item_pop
        mean = self.mean[cand] if item_mean is None else item_mean
        b, c = cand.shape
        user_mean = aggs[:, 1:2].expand(b, c)
        dense = torch.stack(
            [
                torch.einsum("bd,bcd->bc", user_vec, self.item_vecs[cand]),
                torch.einsum("bd,bcd->bc", c_hist, cand_content),
                torch.einsum("bd,bcd->bc", c_sess, cand_content),
                torch.log1p(pop) / 8.0,
                mean / 5.0,
                self.year[cand],
                aggs[:, 0:1].expand(b, c),
                user_mean,
                torch.einsum("bg,bcg->bc", g_hist, cand_genres),
                torch.einsum("bg,bcg->bc", g_sess, cand_genres),
                mean / 5.0 - user_mean,
            ],
            dim=-1,
        )
        return torch.cat(
            [
                dense,
                g_hist.unsqueeze(1).expand(b, c, N_GENRES),
                g_sess.unsqueeze(1).expand(b, c, N_GENRES),
                cand_genres,
                self.ids(cand),
            ],
            dim=-1,
        )


class DCNRanker(nn.Module):
    """DCN-V2 (parallel): x_{l+1} = x0 * (W x_l + b) + x_l, beside an MLP; one logit."""

    def __init__(self, cfg: RankerConfig, inputs: RankerInputs) -> None:
        super().__init__()
        n = cfg.n_features
        self.inputs = inputs
        self.norm = nn.LayerNorm(n)
        self.cross = nn.ModuleList(nn.Linear(n, n) for _ in range(cfg.cross_layers))
        self.deep = nn.Sequential(
            nn.Linear(n, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.hidden // 2), nn.ReLU()
        )
        self.head = nn.Linear(n + cfg.hidden // 2, 1)

    def forward(self, *args: torch.Tensor | None) -> torch.Tensor:
        return self.score_inputs(self.inputs(*args))

    def score_inputs(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) of a feature tensor (B, C, n_features) built by `inputs`."""
        x0 = self.norm(features)
        x = x0
        for layer in self.cross:
            x = x0 * layer(x) + x
        return self.head(torch.cat([x, self.deep(x0)], dim=-1)).squeeze(-1)


class ScoredInputs(nn.Module):
    """The ranker returning its dense inputs beside its logits, from one pass: how serving
    samples the features it ranks with at no second forward (ADR 0131)."""

    def __init__(self, net: DCNRanker) -> None:
        super().__init__()
        self.net = net

    def forward(
        self, history: torch.Tensor, aggs: torch.Tensor, cand: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.net.inputs(history, aggs, cand)
        return self.net.score_inputs(features), features[..., :N_DENSE]


def save_two_tower(model: TwoTower, directory: Path) -> None:
    torch.save(model.state_dict(), directory / "two_tower.pt")
    (directory / "two_tower.json").write_text(model.cfg.model_dump_json())


def load_two_tower(directory: Path, table: ItemTable, device: torch.device) -> TwoTower:
    try:
        cfg = TwoTowerConfig.model_validate_json((directory / "two_tower.json").read_text())
        model = TwoTower(cfg, table)
        state = torch.load(directory / "two_tower.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (OSError, RuntimeError, ValueError) as exc:
        raise ModelLoadError(f"cannot load the two-tower model in {directory}: {exc}") from exc
    return model.to(device).eval()


class RankerModel:
    """A loaded ranker version: scores candidate lists for users (micro-batch friendly)."""

    def __init__(
        self, net: DCNRanker, table: ItemTable, version: str, device: torch.device
    ) -> None:
        self.net = net.to(device).eval()
        self.net.inputs.refresh_item_vectors()
        self.table = table
        self.version = version
        self.device = device
        self.history_len = net.inputs.two_tower.cfg.history_len
        self.scorer: Callable[..., torch.Tensor] = self.net  # the compiled graph once compiled
        self.featured_scorer: Callable[..., tuple[torch.Tensor, torch.Tensor]] = ScoredInputs(
            self.net
        )

    def compile(self) -> None:
        """Score with a frozen TorchScript trace of the network from now on (ADR 0047).

        The trace is taken on a small batch; batch size and candidate count stay dynamic
        (the graph reads them from the input's shape), which `tests/unit/models` checks
        against the eager module at other shapes."""
        hist = torch.zeros((2, self.history_len), dtype=torch.int64, device=self.device)
        hist[:, -1] = 1
        aggs = torch.zeros((2, 2), dtype=torch.float32, device=self.device)
        cand = torch.ones((2, 3), dtype=torch.int64, device=self.device)
        with torch.no_grad(), warnings.catch_warnings():
            # The tracer warns about Python ints taken from shapes; they stay dynamic here.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated: ADR 0047
            traced = torch.jit.trace(self.net, (hist, aggs, cand), check_trace=False)
            self.scorer = torch.jit.freeze(traced.eval())
            featured = torch.jit.trace(
                ScoredInputs(self.net).eval(), (hist, aggs, cand), check_trace=False
            )
            self.featured_scorer = torch.jit.freeze(featured)

    @classmethod
    def load(
        cls, version_dir: Path, device: str | torch.device = "auto", compiled: bool = False
    ) -> RankerModel:
        dev = device if isinstance(device, torch.device) else pick_device(device)
        version_dir = Path(version_dir)
        table = ItemTable.load(version_dir)
        two_tower = load_two_tower(version_dir, table, dev)
        try:
            cfg = RankerConfig.model_validate_json((version_dir / "ranker.json").read_text())
            net = DCNRanker(cfg, RankerInputs(cfg, table, two_tower))
            state = torch.load(version_dir / "ranker.pt", map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        except (OSError, RuntimeError, ValueError) as exc:
            raise ModelLoadError(f"cannot load the ranker in {version_dir}: {exc}") from exc
        version = version_dir.name
        manifest = version_dir / "manifest.json"
        if manifest.exists():
            version = json.loads(manifest.read_text()).get("version", version)
        model = cls(net, table, version, dev)
        if compiled:
            try:
                model.compile()
            except RuntimeError as exc:
                raise ModelLoadError(f"cannot compile the ranker in {version_dir}: {exc}") from exc
        return model

    def save(self, directory: Path) -> None:
        self.table.save(directory)
        save_two_tower(self.net.inputs.two_tower, directory)
        torch.save(self.net.state_dict(), directory / "ranker.pt")
        cfg = RankerConfig(
            n_items=len(self.table),
            id_dim=self.net.inputs.ids.embedding_dim,
            cross_layers=len(self.net.cross),
            hidden=self.net.deep[0].out_features,
        )
        (directory / "ranker.json").write_text(cfg.model_dump_json())

    def user_tensors(self, users: list[UserFeatures]) -> tuple[torch.Tensor, torch.Tensor]:
        hist = encode_histories(self.table, [u.recent_items for u in users], self.history_len)
        aggs = aggregates([u.n_interactions for u in users], [u.mean_rating for u in users])
        return (
            torch.from_numpy(hist).to(self.device),
            torch.from_numpy(aggs).to(self.device),
        )

    @torch.inference_mode()
    def score_batch(
        self, users: list[UserFeatures], candidates: list[list[str]]
    ) -> list[np.ndarray]:
        """One float32 array of scores per user, aligned with their candidate list."""
        return self._score(users, candidates, False)[0]

    @torch.inference_mode()
    def score_batch_with_features(
        self, users: list[UserFeatures], candidates: list[list[str]]
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """`score_batch`'s scores, and the (pairs, N_DENSE) dense inputs they were computed
        from (one row per known candidate), from the same single pass."""
        return self._score(users, candidates, True)

    def _score(
        self, users: list[UserFeatures], candidates: list[list[str]], features: bool
    ) -> tuple[list[np.ndarray], np.ndarray]:
        none = np.zeros((0, N_DENSE), dtype=np.float32)
        if len(users) != len(candidates):
            raise ValueError("one candidate list per user is needed")
        if not users:
            return [], none
        width = max((len(c) for c in candidates), default=0)
        if width == 0:
            return [np.zeros(0, dtype=np.float32) for _ in users], none
        cand = np.zeros((len(users), width), dtype=np.int64)
        for row, items in enumerate(candidates):
            cand[row, : len(items)] = self.table.indices_or_zero(items)
        hist, aggs = self.user_tensors(users)
        cand_t = torch.from_numpy(cand).to(self.device)
        dense = none
        if features:
            scores, inputs = self.featured_scorer(hist, aggs, cand_t)
            dense = inputs[cand_t > 0].float().cpu().numpy()
        else:
            scores = self.scorer(hist, aggs, cand_t)
        scores = scores.float()
        scores = torch.where(cand_t > 0, scores, torch.full_like(scores, UNKNOWN_SCORE))
        out = scores.cpu().numpy()
        return [out[row, : len(items)].copy() for row, items in enumerate(candidates)], dense

    def score(self, user: UserFeatures, candidates: list[str]) -> np.ndarray:
        return self.score_batch([user], [candidates])[0]

    @torch.inference_mode()
    def dense_features(self, users: list[UserFeatures], candidates: list[list[str]]) -> np.ndarray:
        """(pairs, N_DENSE) float32: the dense inputs `score_batch` ranks these pairs with,
        one row per known candidate (unknown ids are not scored by the network). The eager
        `RankerInputs`, the code training builds its inputs with."""
        known = [self.table.indices(items) for items in candidates]
        width = max((len(k) for k in known), default=0)
        if not users or width == 0:
            return np.zeros((0, N_DENSE), dtype=np.float32)
        cand = np.zeros((len(users), width), dtype=np.int64)
        for row, idx in enumerate(known):
            cand[row, : len(idx)] = idx
        hist, aggs = self.user_tensors(users)
        return dense_matrix(self.net.inputs, hist, aggs, torch.from_numpy(cand).to(self.device))


def dense_matrix(
    inputs: RankerInputs,
    history: torch.Tensor,
    aggs: torch.Tensor,
    cand: torch.Tensor,
    item_pop: torch.Tensor | None = None,
    item_mean: torch.Tensor | None = None,
) -> np.ndarray:
    """The dense columns of `inputs` for every (row, candidate) pair with a candidate
    (index > 0), as a (pairs, N_DENSE) float32 array."""
    with torch.no_grad():
        x = inputs(history, aggs, cand, item_pop, item_mean)[..., :N_DENSE]
        return x[cand > 0].float().cpu().numpy()
