"""GPU check: the model paths on `cuda` against the CPU of the same machine, in one run.

    python -m benchmarks.gpu_check embed [--repeat 12]
    python -m benchmarks.gpu_check train

Needs no stack (Kafka, Redis), so it runs on a lent GPU machine with only the model
dependencies. `embed`: items/s of the content embedder (all-MiniLM-L6-v2) over the ML-100K
catalog texts, cuda (fp16) vs CPU. `train`: ML-100K training time of the two-tower and the
DCN-V2 ranker with the full metric table, then the ranker's inference speed on 500
candidates, cuda vs CPU.
"""

from __future__ import annotations

import argparse
import time

from benchmarks.ranker_timing import ranker_speed
from infra.settings import Settings
from models.embedder import Embedder, item_text
from streams import datasets
from streams.sources.movielens import load_items


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
    from models.ranker import RankerModel
    from models.train import train

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["embed", "train"])
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
    else:
        train_and_rank(settings)


if __name__ == "__main__":
    main()
