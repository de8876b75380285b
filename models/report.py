"""The metric table of a training run: as a rich table (CLI, demo) and as Markdown (benchmarks)."""

from __future__ import annotations

from rich.table import Table

from streamrec.models.evaluate import Metrics


def metric_table(metrics: dict[str, Metrics], cold_start: dict[str, dict[str, float]]) -> Table:
    table = Table("model", "Recall@20", "NDCG@20", "HR@10", title="test split (warm users)")
    for name, m in metrics.items():
        table.add_row(name, f"{m.recall_20:.4f}", f"{m.ndcg_20:.4f}", f"{m.hr_10:.4f}")
    models = list(next(iter(cold_start.values()), {}))
    cold = Table("first k", *[f"{m} NDCG@20" for m in models], title="cold start (held-out users)")
    for k, row in cold_start.items():
        cold.add_row(k, *[f"{row[m]:.4f}" for m in models])
    grid = Table.grid(padding=(1, 0))
    grid.add_row(table)
    grid.add_row(cold)
    return grid


def markdown(metrics: dict[str, Metrics], cold_start: dict[str, dict[str, float]]) -> str:
    lines = [
        "| model | Recall@20 | NDCG@20 | HR@10 |",
        "| --- | ---: | ---: | ---: |",
        *[
            f"| {n} | {m.recall_20:.4f} | {m.ndcg_20:.4f} | {m.hr_10:.4f} |"
            for n, m in metrics.items()
        ],
        "",
    ]
    models = list(next(iter(cold_start.values()), {}))
    lines += [
        "| cold start: first k | " + " | ".join(f"{m} NDCG@20" for m in models) + " |",
        "| --- |" + " ---: |" * len(models),
        *[
            f"| {k} | " + " | ".join(f"{row[m]:.4f}" for m in models) + " |"
            for k, row in cold_start.items()
        ],
    ]
    return "\n".join(lines)
