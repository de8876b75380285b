"""The vector index: FAISS type and snapshot policy."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from streamrec.infra.settings.base import Section


class IndexSettings(Section):
    """Vector index snapshots: FAISS type and snapshot policy."""

    kind: Literal["flat", "hnsw", "ivf"] = Field("flat", description="flat = exact inner product")
    hnsw_m: int = Field(32, ge=2)
    hnsw_ef_construction: int = Field(80, ge=1)
    hnsw_ef_search: int = Field(128, ge=1)
    ivf_nlist: int = Field(0, ge=0, description="0: about 4 * sqrt(items)")
    ivf_nprobe: int = Field(16, ge=1)
    blas_threshold: int = Field(20, ge=1, description="faiss: batched searches use BLAS from")
    search_threads: int = Field(1, ge=0, description="readers' FAISS threads; 0 = all (ADR 0013)")
    snapshot_quiet_s: float = Field(1.0, gt=0, description="snapshot once no change for this")
    snapshot_interval_s: float = Field(30.0, gt=0, description="at most this stale under load")
    keep_snapshots: int = Field(5, ge=2, description="older unpromoted versions are pruned")
    validation_queries: int = Field(200, ge=1, description="recall check: sampled queries")
    validation_k: int = Field(10, ge=1)
    min_recall: float = Field(0.9, ge=0, le=1, description="a snapshot below is not published")
    reader_poll_s: float = Field(1.0, ge=0, description="readers check the pointer this often")
