"""FAISS index construction, search parameters and the recall check.

Responsibilities:
- set FAISS's process-wide knobs once (`configure`): the BLAS threshold, so batched flat
  searches of fewer than a few hundred queries use BLAS (NOTES.md: ~6x faster at 64), and
  in reading processes the number of search threads (`configure_reader`, ADR 0013);
- build an `IndexIDMap2` over inner product (vectors are unit length, so it is cosine):
  exact `flat` by default, `hnsw` or `ivf` for large catalogs (`settings.index.kind`);
- measure recall@k of an index against exact search, counting ties at the k-th score as
  hits (duplicate titles give identical vectors, and an exact tie is not a miss).
"""

from __future__ import annotations

import math

import faiss
import numpy as np

from streamrec.infra.settings import IndexSettings
from streamrec.vectors.errors import VectorIndexError


def configure(cfg: IndexSettings) -> None:
    faiss.cvar.distance_compute_blas_threshold = cfg.blas_threshold


def configure_reader(cfg: IndexSettings) -> None:
    """Search threads for a reading process (process-wide in FAISS; builds are elsewhere)."""
    configure(cfg)
    if cfg.search_threads:
        faiss.omp_set_num_threads(cfg.search_threads)


def _base_index(dim: int, n: int, cfg: IndexSettings) -> faiss.Index:
    ip = faiss.METRIC_INNER_PRODUCT
    if cfg.kind == "flat":
        return faiss.IndexFlatIP(dim)
    if cfg.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, ip)
        index.hnsw.efConstruction = cfg.hnsw_ef_construction
        index.hnsw.efSearch = cfg.hnsw_ef_search
        return index
    if cfg.kind == "ivf":
        # FAISS wants ~39 training points per list; small catalogs get fewer lists.
        nlist = cfg.ivf_nlist or int(4 * math.sqrt(max(n, 1)))
        nlist = max(1, min(nlist, n // 39 if n >= 39 else 1))
        return faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, ip)
    raise VectorIndexError(f"unknown index kind {cfg.kind!r}")


def build(matrix: np.ndarray, ids: np.ndarray, cfg: IndexSettings) -> faiss.Index:
    """An `IndexIDMap2` holding `matrix` rows under the int64 `ids`."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    n, dim = matrix.shape
    base = _base_index(dim, n, cfg)
    if not base.is_trained and n:
        base.train(matrix)
    index = faiss.IndexIDMap2(base)
    if n:
        index.add_with_ids(matrix, np.ascontiguousarray(ids, dtype=np.int64))
    tune(index, cfg)
    return index


def tune(index: faiss.Index, cfg: IndexSettings) -> None:
    """Search-time parameters (after a build or a load)."""
    base = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    if isinstance(base, faiss.IndexHNSW):
        base.hnsw.efSearch = cfg.hnsw_ef_search
    elif isinstance(base, faiss.IndexIVF):
        base.nprobe = cfg.ivf_nprobe
        base.make_direct_map()  # so readers can reconstruct an item's vector


def exact_topk(matrix: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Scores of the exact top-k per query, best first: (len(queries), k)."""
    scores = queries @ matrix.T
    k = min(k, matrix.shape[0])
    part = np.partition(-scores, k - 1, axis=1)[:, :k]
    return -np.sort(part, axis=1)


def recall_at_k(
    index: faiss.Index, matrix: np.ndarray, queries: np.ndarray, k: int, tol: float = 1e-4
) -> float:
    """Share of the index's top-k whose score reaches the exact k-th best score (minus tol)."""
    if len(queries) == 0 or matrix.shape[0] == 0:
        return 1.0
    k = min(k, matrix.shape[0])
    exact = exact_topk(matrix, queries, k)
    scores, labels = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    hits = (scores >= exact[:, -1:] - tol) & (labels >= 0)
    return float(hits.sum() / (len(queries) * k))
