"""Content benchmark: the embedding pipeline against the bare model, and the vector index.

    python -m benchmarks.content_bench [--items 5000] [--device cpu|cuda|auto]
                                       [--sizes 10000,1000000] [--skip-pipeline] [--skip-index]
                                       [--backlog]

In one run:
- bare model: items/s of the model on the benchmark's catalog texts, in the pipeline's
  batch size, before and after the pipeline run (their mean counts), in every configuration
  the machine offers: the layout the worker runs it in (`models.embedder_process.
  EmbedderProcess`: on CPU one single-threaded process per core sharing each call, ADR 0088;
  one call of all the texts) and the in-process `models.embedder.Embedder` (one process,
  torch's default threads), each in fp32 and in bf16 autocast on CPU (ADR 0010, 0103), and
  the cosine of bf16 to fp32;
- pipeline: items/s of a real `streamrec worker content-pipeline` process (default
  settings: on CPU the precision probed at start-up) on a fresh stack, from the first item
  produced to catalog.items until the last vector is acknowledged on catalog.vectors (model
  already loaded: start-up is reported apart), and its ratio to the best bare configuration
  (goal >= 0.9; to the same layout and precision for comparison),
  the share of the run spent in model calls and the model's own rate inside the worker
  (diagnostics: they split a shortfall between a slower model and time outside it); with
  `--backlog` the items are produced before the worker starts and the clock starts at its
  ready flag (the benchmark's producing left out);
- index: p50/p99 of one top-500 query, and per query in batches of 64, for flat and HNSW at
  each size (clustered synthetic 384-d unit vectors), HNSW build time, and recall@500 of
  HNSW against exact search, on the synthetic vectors and on the real embeddings of the
  benchmark catalog.

The catalog: the 1,682 ML-100K titles with their years and genres, repeated with an episode
number to `--items` distinct texts of realistic length.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import faiss
import numpy as np
import redis
import torch

from benchmarks.common import bench_stack, machine, percentiles
from streamrec.infra.settings import IndexSettings, Settings
from streamrec.models.embedder import Embedder, item_text
from streamrec.models.embedder_process import EmbedderProcess
from streamrec.processors.content_pipeline import stats_key
from streamrec.streams import datasets
from streamrec.streams.catalog import publish_items
from streamrec.streams.sources.movielens import load_items
from streamrec.streams.worker_process import WorkerProcess
from streamrec.topics import CatalogItem
from streamrec.vectors import faiss_index


def bench_catalog(n: int) -> list[CatalogItem]:
    base = load_items(datasets.fetch(Settings()))
    out = []
    for i in range(n):
        item = base[i % len(base)]
        episode = i // len(base)
        title = item.title if episode == 0 else f"{item.title}: episode {episode}"
        out.append(
            item.model_copy(
                update={"item_id": f"b{i}", "title": title, "popularity_hint": float(i % 97)}
            )
        )
    return out


def bare_items_per_s(
    embedder: Embedder | EmbedderProcess, texts: list[str]
) -> tuple[float, np.ndarray]:
    embedder.embed(texts[:64])  # warm-up
    t0 = time.perf_counter()
    vectors = embedder.embed(texts)
    return len(texts) / (time.perf_counter() - t0), vectors


def pipeline_items_per_s(
    settings: Settings, items: list[CatalogItem], backlog: bool = False
) -> dict[str, Any]:
    """Default: the clock starts before the benchmark produces the items to a running worker.
    backlog=True: the items are in the topic before the worker starts and the clock starts
    at its ready flag, so the benchmark's own producing is not in the measured interval."""
    group = "bench-content"
    store = redis.Redis.from_url(settings.redis_url)
    key = stats_key(group)
    produce_s = 0.0
    if backlog:
        t0 = time.perf_counter()
        publish_items(settings, items)
        produce_s = time.perf_counter() - t0
    t_start = time.perf_counter()
    with WorkerProcess(settings, "content-pipeline", group) as worker:
        while not store.hget(key, "model_version"):
            if not worker.alive() or time.perf_counter() - t_start > 300:
                raise RuntimeError(f"the pipeline did not start; see {worker.log}")
            time.sleep(0.01 if backlog else 0.05)  # polling the worker's readiness flag
        ready = time.perf_counter()
        t0 = time.perf_counter()
        if not backlog:
            publish_items(settings, items)
            produce_s = time.perf_counter() - t0
        first_vector = None
        while (embedded := int(store.hget(key, "embedded") or 0)) < len(items):
            if not worker.alive() or time.perf_counter() - t0 > 900:
                raise RuntimeError(f"pipeline stopped or too slow; see {worker.log}")
            if embedded and first_vector is None:
                first_vector = time.perf_counter()
            time.sleep(0.01)  # polling the acknowledged-vector count; resolution 10 ms
        done = time.perf_counter()
        counts = store.hgetall(key)
    return {
        "items_per_s": len(items) / (done - t0),
        "startup_s": ready - t_start,
        "publish_s": produce_s,
        "first_vector_s": (first_vector or done) - t0,
        # where the worker's time went: model calls (one per buffer) against the whole run
        # (with N model processes, a call's seconds are their seconds in it / N)
        "embed_calls": float(counts.get(b"embed_calls", 0)),
        "embed_share": float(counts.get(b"embed_s", 0)) / (done - t0),
        # the model's own rate inside the worker (its seconds are measured in the model
        # process, so a buffer queued behind the previous one is not counted twice)
        "model_items_per_s": len(items) / max(float(counts.get(b"embed_s", 0)), 1e-9),
        "torch_threads": float(counts.get(b"torch_threads", 0)),
        "processes": float(counts.get(b"embed_processes", 0)),
        "precision": counts.get(b"precision", b"").decode(),
    }


def pipeline_vs_bare(
    settings0: Settings,
    embedder: Embedder,
    items: list[CatalogItem],
    texts: list[str],
    backlog: bool,
) -> tuple[list[str], np.ndarray]:
    """The pipeline worker (default settings: on CPU `cpu_precision` auto) against every
    bare configuration of the model on this machine: the worker's layout (N single-threaded
    processes, one call split across them) and one in-process model (torch's threads), each
    in fp32 and bf16 autocast on CPU. Each is measured before and after the pipeline run
    (ABBA order: a drift of the machine hits all alike); the best of them is the reference."""
    cpu = embedder.device == "cpu"
    probed = cpu and settings0.embedding.cpu_precision == "auto"
    precisions = ["fp32", "bf16"] if cpu else [embedder.precision]

    def fixed(precision: str) -> Settings:
        return (
            settings0.with_overrides(embedding={"cpu_precision": precision}) if cpu else settings0
        )

    layouts = {p: EmbedderProcess(fixed(p)) for p in precisions}
    singles = {p: Embedder(fixed(p)) for p in precisions}
    models: dict[tuple[str, str], Embedder | EmbedderProcess] = {}
    for p in precisions:
        models[("layout", p)] = layouts[p]
    for p in precisions:
        models[("in-process", p)] = singles[p]
    try:
        order = list(models)
        rates: dict[tuple[str, str], list[float]] = {k: [] for k in order}
        vectors: dict[tuple[str, str], np.ndarray] = {}
        for key in order:
            rate, vectors[key] = bare_items_per_s(models[key], texts)
            rates[key].append(rate)
        with bench_stack() as stack:
            settings = stack.with_overrides(embedding={"device": settings0.embedding.device})
            pipe = pipeline_items_per_s(settings, items, backlog=backlog)
        for key in reversed(order):
            rates[key].append(bare_items_per_s(models[key], texts)[0])
        info = layouts[precisions[0]].info
    finally:
        for layout in layouts.values():
            layout.close()
    mean = {k: sum(v) / len(v) for k, v in rates.items()}
    best = max(mean, key=lambda k: mean[k])
    chosen = pipe["precision"] or embedder.precision
    same = mean.get(("layout", chosen), mean[("layout", precisions[0])])
    names = {
        "layout": f"worker's layout ({info.processes} process(es) x {info.torch_threads} torch "
        "thread(s), one call split across them)",
        "in-process": f"in-process (1 process x {torch.get_num_threads()} torch threads)",
    }
    lines = [
        f"| bare model, {names[layout]}, {precision}, {len(texts):,} texts, batches of "
        f"{embedder.batch_size} (before / after the pipeline) | {mean[(layout, precision)]:,.0f}"
        f" items/s ({' / '.join(f'{r:,.0f}' for r in rates[(layout, precision)])})"
        f"{' **best**' if (layout, precision) == best else ''} |"
        for layout, precision in order
    ]
    rate = pipe["items_per_s"]
    lines += [
        f"| content pipeline worker (precision {chosen}{' chosen by the probe' if probed else ''})"
        f": catalog.items in -> acknowledged catalog.vectors out"
        f"{' (from a backlog)' if backlog else ''} | **{rate:,.0f} items/s** |",
        f"| pipeline / best bare configuration ({best[0]}, {best[1]}) | **{rate / mean[best]:.2f}"
        f"** (goal >= 0.90; / the same layout and precision: {rate / same:.2f}) |",
        f"| worker: model calls (one per buffer) / share of the run spent in the model | "
        f"{pipe['embed_calls']:.0f} / {pipe['embed_share']:.0%} (worker "
        f"{pipe['processes']:.0f} process(es) x {pipe['torch_threads']:.0f} torch "
        f"thread(s)) |",
        f"| the model's own rate inside the worker (items / seconds in model calls; with N "
        f"processes, their seconds in the model / N) | "
        f"{pipe['model_items_per_s']:,.0f} items/s ({pipe['model_items_per_s'] / same:.2f} "
        f"of the bare model in the same layout and precision) |",
        f"| producing the items ({'not ' if backlog else ''}in the rate) / "
        f"first buffer's vectors acknowledged at | "
        f"{pipe['publish_s']:.2f} s / {pipe['first_vector_s']:.2f} s |",
        f"| worker start-up (process, model load, precision probe, group join), not in the "
        f"rate | {pipe['startup_s']:.1f} s |",
    ]
    if cpu:
        a, b = vectors[("in-process", "fp32")], vectors[("in-process", "bf16")]
        cosine = np.sum(a * b, axis=1)
        lines.append(
            f"| bf16 autocast against fp32, in-process vectors | cosine min {cosine.min():.5f}, "
            f"mean {cosine.mean():.6f} |"
        )
    return lines, vectors[order[0]]


def clustered(n: int, dim: int = 384, seed: int = 0) -> np.ndarray:
    """Unit vectors around 1,000 centres: closer to embeddings than uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, dim), dtype=np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    step = 100_000
    for start in range(0, n, step):
        m = min(step, n - start)
        rows = centres[rng.integers(0, 1000, m)] + 0.7 * rng.standard_normal(
            (m, dim), dtype=np.float32
        )
        out[start : start + m] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return out


def query_latency(
    index: faiss.Index, queries: np.ndarray, k: int, threads: int = 1
) -> dict[str, float]:
    """Searches the way a reader does: `threads` FAISS threads (index.search_threads)."""
    faiss.omp_set_num_threads(threads)
    times = []
    for q in queries:
        t0 = time.perf_counter()
        index.search(q[None, :], k)
        times.append((time.perf_counter() - t0) * 1000)
    batch = queries[:64]
    t0 = time.perf_counter()
    index.search(batch, k)
    per_query_batched = (time.perf_counter() - t0) * 1000 / len(batch)
    faiss.omp_set_num_threads(os.cpu_count() or 1)  # builds use every core
    return {**percentiles(times, (50, 99)), "batched_ms": per_query_batched}


def recall_vs_exact(approx: faiss.Index, exact: faiss.Index, queries: np.ndarray, k: int) -> float:
    _, truth = exact.search(queries, k)
    _, found = approx.search(queries, k)
    return float(np.mean([len(set(t) & set(f)) / k for t, f in zip(truth, found, strict=True)]))


def index_bench(matrix: np.ndarray, n_queries: int, k: int, cfg: IndexSettings) -> list[str]:
    ids = np.arange(len(matrix), dtype=np.int64)
    rng = np.random.default_rng(1)
    queries = matrix[rng.choice(len(matrix), n_queries, replace=False)]
    queries = queries + 0.05 * rng.standard_normal(queries.shape, dtype=np.float32)
    queries = np.ascontiguousarray(queries / np.linalg.norm(queries, axis=1, keepdims=True))
    rows = []
    t0 = time.perf_counter()
    flat = faiss_index.build(matrix, ids, cfg.model_copy(update={"kind": "flat"}))
    flat_build = time.perf_counter() - t0
    for threads in sorted({cfg.search_threads or os.cpu_count() or 1, os.cpu_count() or 1}):
        lat = query_latency(flat, queries, k, threads)
        rows.append(
            f"| {len(matrix):,} | flat (exact), {threads} thread(s) | {flat_build:.1f} s | "
            f"{lat['p50']:.2f} ms | {lat['p99']:.2f} ms | {lat['batched_ms']:.2f} ms | 1.000 |"
        )
    t0 = time.perf_counter()
    hnsw = faiss_index.build(matrix, ids, cfg.model_copy(update={"kind": "hnsw"}))
    hnsw_build = time.perf_counter() - t0
    lat = query_latency(hnsw, queries, k, cfg.search_threads or os.cpu_count() or 1)
    recall = recall_vs_exact(hnsw, flat, queries, k)
    rows.append(
        f"| {len(matrix):,} | hnsw M={cfg.hnsw_m} efC={cfg.hnsw_ef_construction} "
        f"efS={cfg.hnsw_ef_search} | {hnsw_build:.1f} s | {lat['p50']:.2f} ms | "
        f"{lat['p99']:.2f} ms | {lat['batched_ms']:.2f} ms | {recall:.3f} |"
    )
    del flat, hnsw
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--k", type=int, default=500)
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--skip-index", action="store_true")
    parser.add_argument(
        "--backlog",
        action="store_true",
        help="produce the items before the worker starts; time from its ready flag",
    )
    args = parser.parse_args()

    settings0 = Settings().with_overrides(embedding={"device": args.device})
    items = bench_catalog(args.items)
    texts = [item_text(i) for i in items]
    print(f"machine: {machine()}")
    embedder = Embedder(settings0)
    print(
        f"model: {embedder.model_version} on {embedder.device}, batch {embedder.batch_size}, "
        f"precision {embedder.precision} (in-process, {settings0.embedding.cpu_precision})"
    )
    lines: list[str] = []
    real_vectors = None

    if not args.skip_pipeline:
        lines, real_vectors = pipeline_vs_bare(settings0, embedder, items, texts, args.backlog)
    print("\n".join(["| what | figure |", "| --- | --- |", *lines]))

    if not args.skip_index:
        cfg = Settings().index
        faiss_index.configure(cfg)
        print(
            f"\nindex: top-{args.k}, 384-d, BLAS threshold {cfg.blas_threshold}, search "
            f"threads {cfg.search_threads} (and all cores for comparison)"
        )
        print("| vectors | index | build | p50 | p99 | per query, batch of 64 | recall@k |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        if real_vectors is None:
            real_vectors = embedder.embed(texts)
        for row in index_bench(real_vectors, 200, min(args.k, 100), cfg):
            print(
                row.replace("| flat", "| real embeddings, k=100: flat", 1).replace(
                    "| hnsw", "| real embeddings, k=100: hnsw", 1
                )
            )
        for size in (int(s) for s in args.sizes.split(",")):
            matrix = clustered(size)
            for row in index_bench(matrix, 200 if size <= 100_000 else 100, args.k, cfg):
                print(row, flush=True)
            del matrix


if __name__ == "__main__":
    main()
