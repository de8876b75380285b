"""Item content vectors for training, embedded once and cached by content hash.

Responsibilities:
- embed each item's text (`models.embedder.item_text`, the same text the content pipeline
  embeds) with the shared `Embedder` (MiniLM, packaged weights, GPU when present);
- cache the matrix under `<data cache>/content-vectors/content-<hash>.npy`, the hash covering
  the model version and every item's text, so re-training on the same catalog never
  re-embeds and a changed title re-embeds everything.
"""

from __future__ import annotations

import hashlib

import numpy as np

from streamrec.infra.settings import Settings
from streamrec.models.embedder import Embedder, item_text
from streamrec.topics import CatalogItem


def catalog_hash(items: list[CatalogItem], model_name: str) -> str:
    digest = hashlib.sha256(model_name.encode())
    for item in items:
        digest.update(b"\x00" + item.item_id.encode() + b"\x01" + item_text(item).encode())
    return digest.hexdigest()[:24]


def content_vectors(settings: Settings, items: list[CatalogItem]) -> np.ndarray:
    """(len(items), d) float32 L2-normalised content vectors, from the cache when present."""
    cache = settings.data.cache_dir / "content-vectors"
    path = cache / f"content-{catalog_hash(items, settings.embedding.model)}.npy"
    if path.exists():
        return np.load(path)
    vectors = Embedder(settings).embed([item_text(i) for i in items])
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    tmp.replace(path)
    return vectors
