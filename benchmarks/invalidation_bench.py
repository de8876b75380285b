"""Invalidation benchmark: a viral new item and a model promotion under steady load,
broadcast mode against coalescing mode, in one run.

    python -m benchmarks.invalidation_bench [--rate 250] [--ttl 5] [--refresh-rate 8]

On a fresh stack of its own, with ML-100K loaded (1,682 items embedded by MiniLM, 100,000
ratings on events.interactions, every user's candidates precomputed), for each mode it runs
the invalidation worker and `scenarios.invalidation_load`: a steady Zipf request load over the
943 users through a response cache (TTL) in front of `cand:{user}`; after a steady phase a
"viral" new item is published (catalog.items + catalog.vectors), later a ranker promotion
(registry.changes). Reported per mode: response-cache hit ratio (steady, after the item,
after the promotion, and the worst second), computations per second (rankings on
response-cache misses + candidate computations on candidate-store misses and refreshes)
against the steady mean (amplification = worst 3-second mean / steady mean), request p99, and how
long until every affected user's candidates hold the new item.

The candidate computation here is the scenario's own (FAISS top-k with the user's taste
vector, the same taste the processor uses): the project's candidates processor is not in
the loop, so what is compared is the invalidation strategy, with one cost model for both.
`--device` picks the embedding device (default auto: CUDA when torch sees one).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from benchmarks.common import bench_stack, machine
from streamrec.infra.settings import Settings
from streamrec.scenarios.invalidation_load import ModeResult, World, run_mode
from streamrec.streams import datasets


def _fmt(x: float | None, unit: str = "", digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}{unit}"


def _against_steady_peak(r: ModeResult) -> str:
    c = r.computations
    return (
        f"{c['viral_peak_smooth'] / c['steady_peak_smooth']:.2f}x / "
        f"{c['promotion_peak_smooth'] / c['steady_peak_smooth']:.2f}x"
    )


def table(results: list[ModeResult], refresh_rate: float) -> str:
    lines = [
        "| figure | " + " | ".join(r.mode for r in results) + " |",
        "| --- | " + " | ".join("---" for _ in results) + " |",
    ]

    def row(name: str, values: list[str]) -> None:
        lines.append(f"| {name} | " + " | ".join(values) + " |")

    row("hit ratio, steady", [_fmt(r.hit_ratio["steady"] * 100, " %", 1) for r in results])
    row(
        "hit ratio after the viral item (worst second)",
        [
            f"{r.hit_ratio['viral'] * 100:.1f} % ({r.hit_ratio['viral_min'] * 100:.1f} %)"
            for r in results
        ],
    )
    row(
        "hit ratio, after the promotion (worst second)",
        [
            f"{r.hit_ratio['promotion'] * 100:.1f} % ({r.hit_ratio['promotion_min'] * 100:.1f} %)"
            for r in results
        ],
    )
    row(
        "computations/s, steady mean (peak second)",
        [
            f"{r.computations['steady_mean']:.0f} ({r.computations['steady_peak']:.0f})"
            for r in results
        ],
    )
    row(
        "amplification, viral item: peak 3 s mean / steady mean (peak 1 s)",
        [f"{r.amplification['viral']:.2f}x ({r.amplification['viral_1s']:.2f}x)" for r in results],
    )
    row(
        "amplification, promotion (peak 1 s)",
        [
            f"{r.amplification['promotion']:.2f}x ({r.amplification['promotion_1s']:.2f}x)"
            for r in results
        ],
    )
    row(
        "peak 3 s mean against the steady phase's own peak 3 s mean: viral / promotion",
        [_against_steady_peak(r) for r in results],
    )

    def split(r: ModeResult) -> str:
        a = r.amplification
        if "viral_refreshing_mean" not in a or "viral_after_peak_smooth" not in a:
            return "n/a"
        return (
            f"{a['viral_refreshing_mean']:.2f}x / {a['viral_refreshing_peak_smooth']:.2f}x; "
            f"{a['viral_after_mean']:.2f}x / {a['viral_after_peak_smooth']:.2f}x"
        )

    row(
        "viral phase, seconds with the item's commands: mean / peak 3 s; the rest: same",
        [split(r) for r in results],
    )
    row(
        "same measure on the steady phase itself: the noise floor",
        [
            f"{r.amplification['steady']:.2f}x ({r.amplification['steady_1s']:.2f}x)"
            for r in results
        ],
    )
    row(
        "request p99 steady / viral / promotion (ms)",
        [
            f"{r.p99_ms['steady']:.2f} / {r.p99_ms['viral']:.2f} / {r.p99_ms['promotion']:.2f}"
            for r in results
        ],
    )
    row("users the viral item affects", [str(r.affected) for r in results])
    row(
        "affected users whose candidates hold it by the end of the run",
        [f"{r.reached}/{r.affected}" for r in results],
    )
    row(
        "time until every affected user has it (median)",
        [f"{_fmt(r.reach_s, ' s', 1)} ({_fmt(r.reach_p50_s, ' s', 1)})" for r in results],
    )
    row("commands on cache.invalidations", [str(r.commands) for r in results])
    row(
        "refresh commands in the busiest 1 s / 3 s (bound: rate x T + burst)",
        [
            f"{r.max_refreshes['1s']} / {r.max_refreshes['3s']} "
            f"({r.max_refreshes['1s_bound']} / {r.max_refreshes['3s_bound']})"
            if r.mode == "coalesce"
            else "n/a (deletes)"
            for r in results
        ],
    )
    lines.append("")
    lines.append(f"Refresh rate bound (coalescing): {refresh_rate:g} commands/s.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=250.0, help="requests/s")
    parser.add_argument("--ttl", type=float, default=5.0, help="response cache TTL, s")
    parser.add_argument(
        "--ttl-jitter",
        type=float,
        default=0.0,
        help="each cache entry lives TTL x (1 +- this); 0 (default) keeps the cold start's "
        "users expiring together every TTL",
    )
    parser.add_argument("--refresh-rate", type=float, default=8.0, help="commands/s bound")
    parser.add_argument(
        "--refresh-burst",
        type=int,
        default=1,
        help="token bucket size; 1 paces evenly (a larger bucket lets a pass start with a burst)",
    )
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--steady", type=float, default=15.0)
    parser.add_argument("--viral", type=float, default=70.0)
    parser.add_argument("--promotion", type=float, default=20.0)
    parser.add_argument("--modes", default="broadcast,coalesce")
    parser.add_argument("--device", default="auto", help="embedding device: auto, cpu, cuda")
    parser.add_argument("--json", type=Path, default=None, help="write the series here")
    args = parser.parse_args()

    ml = datasets.fetch(Settings())
    results: list[ModeResult] = []
    with bench_stack() as base:
        settings = base.with_overrides(
            embedding={"device": args.device},
            invalidation={
                "window_s": 1.0,
                "max_delay_s": 5.0,
                "await_index_s": 0.0,  # the scenario's index holds the item when it is published
                "refresh_rate_per_s": args.refresh_rate,
                "refresh_burst": args.refresh_burst,
                "neighbour_rank": 100,
            },
        )
        print("loading ML-100K: embedding 1,682 items, publishing 100,000 ratings ...")
        world = World.load(settings, ml)
        world.publish(settings)
        for mode in args.modes.split(","):
            print(f"mode {mode}: running ...")
            results.append(
                run_mode(
                    settings,
                    world,
                    mode,
                    rate=args.rate,
                    ttl_s=args.ttl,
                    warmup_s=args.warmup,
                    steady_s=args.steady,
                    viral_s=args.viral,
                    promotion_s=args.promotion,
                    ttl_jitter=args.ttl_jitter,
                )
            )
    print()
    print(f"Machine: {machine()}")
    print(
        f"Load: {args.rate:g} requests/s, Zipf(1.0) over 943 users, response cache TTL "
        f"{args.ttl:g} s (jitter +-{args.ttl_jitter:g}); candidates: top-100 by content"
    )
    print()
    print(table(results, args.refresh_rate))
    print()
    for r in results:
        series = " ".join(f"{row['hit_ratio'] * 100:.0f}" for row in r.series)
        comps = " ".join(f"{row['computations']:.0f}" for row in r.series)
        print(f"{r.mode} hit ratio % per second: {series}")
        print(f"{r.mode} computations per second: {comps}")
    if args.json:
        args.json.write_text(
            json.dumps([r.__dict__ for r in results], default=lambda o: o.__dict__, indent=1)
        )


if __name__ == "__main__":
    main()
