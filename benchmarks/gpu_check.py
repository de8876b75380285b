"""GPU check: the model paths on `cuda` against the CPU of the same machine, in one run.

    python -m benchmarks.gpu_check embed [--repeat 12]
    python -m benchmarks.gpu_check train
    python -m benchmarks.gpu_check serve [--requests 4000 --concurrency 64]

Needs no stack (Kafka, Redis), so it runs on a lent GPU machine with only the model
dependencies. `embed`: items/s of the content embedder (all-MiniLM-L6-v2) over the ML-100K
catalog texts, cuda (fp16) vs CPU. `train`: ML-100K training time of the two-tower and the
DCN-V2 ranker with the full metric table, then the ranker's inference speed on 500
candidates, cuda vs CPU. `serve`: the serving core itself (`serving.core.Recommender`: the
micro-batcher, the deadlines, re-ranking) with the ML-100K users' features, 50-item
histories and 500 candidates held in memory (`serving.memory`, no Redis), ranking on cuda
and on the CPU: answers/s and latency at a fixed concurrency, and the answers' levels.
"""

from __future__ import annotations

import argparse
import time

from benchmarks.ranker_timing import ranker_speed
from streamrec.infra.settings import Settings
from streamrec.models.embedder import Embedder, item_text
from streamrec.streams import datasets
from streamrec.streams.sources.movielens import load_items


def embed(settings: Settings, repeat: int) -> None:
    texts = [item_text(i) for i in load_items(datasets.fetch(settings))] * repeat
    for device, batch in (("cuda", 256), ("cuda", 64), ("cpu", 64)):
        embedder = Embedder(settings.with_overrides(embedding={"batch_size": batch}), device=device)
        sample = texts if device.startswith("cuda") else texts[: len(texts) // repeat]
        embedder.embed(sample[:512])  # warm-up (kernels, tokenizer caches)
        t = time.perf_counter()
        vectors = embedder.embed(sample)
        rate = len(sample) / (time.perf_counter() - t)
        print(
            f"embed {device} batch {batch}: {rate:,.0f} items/s over {len(sample):,} texts "
            f"({vectors.shape[1]}-d, model {embedder.model_version})"
        )


def train_and_rank(settings: Settings) -> None:
    from streamrec.models.ranker import RankerModel
    from streamrec.models.train import train

    for device in ("cuda", "cpu"):
        s = settings.with_overrides(models={"device": device})
        t = time.perf_counter()
        result = train(s, force=True, device=device)
        wall = time.perf_counter() - t
        print(
            f"train on {result.device}: {wall:.1f} s wall; stages "
            + ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
        )
        for name, m in result.metrics.items():
            print(f"  {name}: {m}")
        for dev in dict.fromkeys((device, "cpu")):
            model = RankerModel.load(result.ranker.path, dev)
            p50, per_s = ranker_speed(model, batch=32)
            print(
                f"  ranker on {dev}: one request of 500 candidates p50 {p50:.2f} ms; "
                f"batched 32x500 {per_s:,.0f} candidates/s"
            )
        if device == "cuda":
            model = RankerModel.load(result.ranker.path, "cuda")
            _p50, per_s = ranker_speed(model, batch=256)
            print(f"  ranker on cuda, batched 256x500: {per_s:,.0f} candidates/s")


def serve_core(settings: Settings, requests: int, concurrency: int) -> None:
    import asyncio

    import numpy as np
    import torch

    from streamrec.models.features import UserFeatures
    from streamrec.models.ranker import RankerModel
    from streamrec.models.train import train
    from streamrec.scenarios.seed import MovieLens, candidate_list
    from streamrec.serving.core import Recommender
    from streamrec.serving.item_catalog import ItemCatalog
    from streamrec.serving.memory import (
        MemoryCandidates,
        MemoryFeatures,
        MemoryHistory,
        MemoryPopular,
    )
    from streamrec.serving.ports import FeatureRead
    from streamrec.serving.schemas import RecQuery

    ml = MovieLens.load(settings)
    path = train(settings, device="cuda" if torch.cuda.is_available() else "cpu").ranker.path
    users = ml.users
    feats = {}
    for u in users:
        hist = [i for _, i, _ in ml.history[u]]
        feats[u] = FeatureRead(
            UserFeatures(user_id=u, recent_items=hist[-10:], n_interactions=len(hist))
        )
    history = {u: [i for _, i, _ in ml.history[u]][-50:] for u in users}
    cands = {u: candidate_list(ml, u, 500) for u in users}
    top = sorted(ml.popularity.items(), key=lambda kv: -kv[1])[:500]
    catalog = ItemCatalog()
    for item in ml.items:
        catalog.apply(item)

    async def run(device: str) -> None:
        model = RankerModel.load(path, device)

        def rank(batch):
            scores = model.score_batch([b.user for b in batch], [b.item_ids for b in batch])
            return [(s, "v1") for s in scores]

        cfg = settings.serving.model_copy(
            # Generous budget and breaker: this measures the ranking path, not the fallbacks.
            update={
                "cache_ttl_s": 0.0,
                "request_budget_ms": 5000,
                "max_in_flight": 256,
                "breaker_failures": 10_000,
            }
        )
        core = Recommender(
            cfg,
            MemoryFeatures(feats),
            MemoryCandidates(cands),
            MemoryPopular({cfg.popular_window: [(i, float(c)) for i, c in top]}),
            rank,
            catalog,
            history=MemoryHistory(history),
        )
        await core.start()
        sem = asyncio.Semaphore(concurrency)
        latencies: list[float] = []
        levels: dict[str, int] = {}

        async def one(n: int) -> None:
            async with sem:
                q = RecQuery(
                    request_id=f"r{n}", user_id=users[n % len(users)], k=20, budget_ms=5000
                )
                answer = await core.recommend(q)
                latencies.append(answer.latency_ms)
                levels[answer.level] = levels.get(answer.level, 0) + 1

        await asyncio.gather(*(one(n) for n in range(min(500, requests))))  # warm-up
        latencies.clear()
        levels.clear()
        batches = core.batcher.batches
        t = time.perf_counter()
        cpu0, loop0 = time.process_time(), time.thread_time()
        await asyncio.gather(*(one(n) for n in range(requests)))
        wall = time.perf_counter() - t
        # CPU per answer: all threads, and the event loop's thread alone (this one).
        cpu_ms = (time.process_time() - cpu0) * 1000.0 / requests
        loop_ms = (time.thread_time() - loop0) * 1000.0 / requests
        ran = core.batcher.batches - batches
        await core.stop()
        p50, p99 = np.percentile(latencies, [50, 99])
        print(
            f"serving core on {device}: {requests / wall:,.0f} answers/s at concurrency "
            f"{concurrency} ({requests} requests x 500 candidates); latency p50 {p50:.1f} ms, "
            f"p99 {p99:.1f} ms; levels {levels}; mean batch {requests / max(1, ran):.1f}; "
            f"CPU per answer {cpu_ms:.2f} ms (event loop {loop_ms:.2f} ms)"
        )
        for metric in core.metrics.dependency_errors.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total") and sample.value:
                    print(f"  dependency errors {sample.labels}: {sample.value:.0f}")

    for device in ("cuda", "cpu") if torch.cuda.is_available() else ("cpu",):
        asyncio.run(run(device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["embed", "train", "serve"])
    parser.add_argument("--requests", type=int, default=4000, help="serve: requests answered")
    parser.add_argument("--concurrency", type=int, default=64, help="serve: requests at once")
    parser.add_argument("--repeat", type=int, default=12, help="catalog copies embedded on cuda")
    args = parser.parse_args()
    settings = Settings()
    import torch

    print(
        f"torch {torch.__version__}, cuda {torch.cuda.is_available()}: "
        f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-'}; "
        f"CPU threads {torch.get_num_threads()}"
    )
    if args.part == "embed":
        embed(settings, args.repeat)
    elif args.part == "serve":
        serve_core(settings, args.requests, args.concurrency)
    else:
        train_and_rank(settings)


if __name__ == "__main__":
    main()
