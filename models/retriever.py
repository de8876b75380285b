"""The retrieval side the candidates processor loads (registry kind "retriever").

Responsibilities:
- `save_retriever`: write a version directory: the item table, the two-tower weights and a
  FAISS inner-product index over the item tower's vectors (`items.faiss`, ids = dense
  item indices), built once at training time and shipped with the version;
- `RetrieverModel`: `load(version_dir, device)`; `search(users, k)` (two-tower ANN),
  `similar_content(item_ids, k)` (content vectors of the catalog, MiniLM).
"""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import torch

from streamrec.models.errors import ModelLoadError
from streamrec.models.features import UserFeatures
from streamrec.models.items import ItemTable
from streamrec.models.ranker import RankerModel, load_two_tower, pick_device
from streamrec.models.two_tower import aggregates, encode_histories

Hit = tuple[str, float]


def _flat_index(vectors: np.ndarray) -> faiss.Index:
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
    ids = np.arange(1, len(vectors) + 1, dtype=np.int64)
    index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
    return index


def save_retriever(model: RankerModel, directory: Path) -> None:
    from streamrec.models.ranker import save_two_tower

    model.table.save(directory)
    two_tower = model.net.inputs.two_tower
    save_two_tower(two_tower, directory)
    with torch.no_grad():
        vectors = two_tower.all_items()[1:].float().cpu().numpy()
    faiss.write_index(_flat_index(vectors), str(directory / "items.faiss"))


class RetrieverModel:
    def __init__(self, directory: Path, device: str | torch.device = "cpu") -> None:
        self.device = device if isinstance(device, torch.device) else pick_device(device)
        self.table = ItemTable.load(directory)
        self.two_tower = load_two_tower(directory, self.table, self.device)
        try:
            self.index = faiss.read_index(str(directory / "items.faiss"))
        except RuntimeError as exc:
            raise ModelLoadError(f"cannot read {directory / 'items.faiss'}: {exc}") from exc
        self.content_index = _flat_index(self.table.content)
        self.version = directory.name
        manifest = directory / "manifest.json"
        if manifest.exists():
            self.version = json.loads(manifest.read_text()).get("version", self.version)
        self.history_len = self.two_tower.cfg.history_len

    @classmethod
    def load(cls, directory: Path, device: str | torch.device = "cpu") -> RetrieverModel:
        return cls(Path(directory), device)

    @torch.inference_mode()
    def user_vectors(self, users: list[UserFeatures]) -> np.ndarray:
        hist = encode_histories(self.table, [u.recent_items for u in users], self.history_len)
        aggs = aggregates([u.n_interactions for u in users], [u.mean_rating for u in users])
        vecs = self.two_tower.user(
            torch.from_numpy(hist).to(self.device), torch.from_numpy(aggs).to(self.device)
        )
        return np.ascontiguousarray(vecs.float().cpu().numpy())

    def _hits(self, scores: np.ndarray, ids: np.ndarray, seen: set[str], k: int) -> list[Hit]:
        out: list[Hit] = []
        for s, i in zip(scores.tolist(), ids.tolist(), strict=True):
            if i <= 0:
                continue
            item = self.table.item_id(i)
            if item not in seen:
                out.append((item, float(s)))
            if len(out) >= k:
                break
        return out

    def search(self, users: list[UserFeatures], k: int) -> list[list[Hit]]:
        """Top-k items per user by the two-tower, their recent items left out."""
        if not users or k <= 0:
            return [[] for _ in users]
        extra = max(len(u.recent_items) for u in users)
        scores, ids = self.index.search(self.user_vectors(users), min(k + extra, len(self.table)))
        return [self._hits(scores[r], ids[r], set(u.recent_items), k) for r, u in enumerate(users)]

    def similar_content(self, item_ids: list[str], k: int, exclude: set[str]) -> list[Hit]:
        """Items whose content is closest to the mean content of `item_ids`."""
        idx = self.table.indices(item_ids)
        if len(idx) == 0 or k <= 0:
            return []
        query = self.table.content[idx - 1].mean(axis=0, keepdims=True)
        query /= max(float(np.linalg.norm(query)), 1e-12)
        scores, ids = self.content_index.search(
            query.astype(np.float32), min(k + len(exclude), len(self.table))
        )
        return self._hits(scores[0], ids[0], exclude, k)
