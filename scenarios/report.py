"""A scenario's report: a self-contained HTML page, its charts as PNGs beside it, a table.

`write_report(directory, result)` draws one chart per metric over time with every mode of
the run overlaid (matplotlib, Agg backend: no display needed), saves each as a PNG, and
writes `index.html` with the same images embedded (base64), so the page can be mailed or
opened anywhere on its own. `summary_table` is the rich table printed at the end of a run.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict
from rich.console import Console
from rich.table import Table


def print_line(console: Console, line: str) -> None:
    """One line of a run's log, as text: its `[naive]` / `[streamrec]` prefixes are rich
    markup tags to `console.print`, which would drop them."""
    console.print(line, highlight=False, markup=False)


# (series column, chart title, y label); a row's missing column is drawn as a gap.
CHARTS: tuple[tuple[str, str, str], ...] = (
    ("p50_ms", "p50 latency", "ms"),
    ("p99_ms", "p99 latency", "ms"),
    ("answers", "answers per second", "1/s"),
    ("attempts", "attempts per second (what the worker received)", "1/s"),
    ("error_rate", "error rate (timeouts, 5xx other than shedding)", "share"),
    ("shed_rate", "shed rate (503 + Retry-After)", "share"),
    ("level_FULL", "answers at level FULL", "share"),
    ("level_STALE_FEATURES", "answers at level STALE_FEATURES", "share"),
    ("level_SIMPLE_RANKING", "answers at level SIMPLE_RANKING", "share"),
    ("level_POPULAR", "answers at level POPULAR", "share"),
    ("clicks", "clicks per second", "1/s"),
    ("llm_calls", "LLM provider calls per second (its quota: 100/min)", "1/s"),
    ("llm_429", "LLM provider refusals (429) per second", "1/s"),
    ("redis_paused", "online store (redis-server) stopped", "1 = stopped"),
    ("hit_ratio", "response cache hit ratio", "share"),
    ("computations", "computations per second (rankings + candidate computations)", "1/s"),
)
SUMMARY_ROWS: tuple[tuple[str, str], ...] = (
    ("requests", "{:.0f}"),
    ("attempts_per_request", "{:.2f}"),
    ("retry_share", "{:.1%}"),
    ("goodput_per_s", "{:.0f}"),
    ("goodput_of_capacity", "{:.1%}"),
    ("p50_ms", "{:.1f}"),
    ("p99_ms", "{:.1f}"),
    ("p99_answered_ms", "{:.1f}"),
    ("client_lag_p99_ms", "{:.1f}"),
    ("answered", "{:.1%}"),
    ("shed_rate", "{:.1%}"),
    ("error_rate", "{:.1%}"),
    ("full_share", "{:.1%}"),
    ("clicks_per_s", "{:.2f}"),
    ("llm_calls", "{:.0f}"),
    ("llm_429_share", "{:.1%}"),
    # redis-failover
    ("outage_s", "{:.1f}"),
    ("outage_error_rate", "{:.1%}"),
    ("outage_answered", "{:.1%}"),
    ("outage_below_full", "{:.1%}"),
    ("full_before", "{:.1%}"),
    ("full_again_s", "{:.2f}"),
    # invalidation-storm
    ("hit_ratio_steady", "{:.1%}"),
    ("hit_ratio_viral", "{:.1%}"),
    ("hit_ratio_promotion", "{:.1%}"),
    ("hit_ratio_worst", "{:.1%}"),
    ("hit_ratio_drop", "{:.1%}"),
    ("computations_steady", "{:.0f}"),
    ("computations_peak", "{:.0f}"),
    ("computations_bound", "{:.0f}"),
    ("amplification_viral", "{:.2f}"),
    ("amplification_promotion", "{:.2f}"),
    ("commands", "{:.0f}"),
    ("affected", "{:.0f}"),
    ("reached", "{:.0f}"),
    # week (the default experiment's variants)
    ("impressions_control", "{:.0f}"),
    ("ctr_control", "{:.2%}"),
    ("ctr_control_low", "{:.2%}"),
    ("ctr_control_high", "{:.2%}"),
    ("impressions_treatment", "{:.0f}"),
    ("ctr_treatment", "{:.2%}"),
    ("ctr_treatment_low", "{:.2%}"),
    ("ctr_treatment_high", "{:.2%}"),
    ("ctr_lift", "{:+.2%}"),
    ("catalog_items", "{:.0f}"),
    ("coverage", "{:.1%}"),
)
COLOURS = {"naive": "#d62728", "streamrec": "#1f77b4"}


class ModeRun(BaseModel):
    """One mode's figures: per-second rows and the whole run's summary."""

    model_config = ConfigDict(extra="forbid")

    mode: str
    series: list[dict[str, float]]
    summary: dict[str, float]
    settings: dict[str, str] = {}  # what the mode switched, for the reader


class ScenarioResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    title: str
    description: str
    metric: str  # the summary figure the scenario is about
    better: str = "lower"  # "lower" or "higher"
    parameters: dict[str, str] = {}
    runs: list[ModeRun]
    notes: list[str] = []


def charts_of(result: ScenarioResult) -> list[tuple[str, str, str]]:
    """The charts whose column some run measured (the LLM's only where a provider ran)."""
    return [c for c in CHARTS if any(c[0] in row for r in result.runs for row in r.series)]


def _summary_rows(result: ScenarioResult) -> list[tuple[str, str]]:
    return [row for row in SUMMARY_ROWS if any(row[0] in r.summary for r in result.runs)]


def _chart_png(column: str, title: str, unit: str, runs: Sequence[ModeRun]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=100)
    for run in runs:
        xs = [r["t"] for r in run.series]
        ys = [r.get(column, math.nan) for r in run.series]
        ax.plot(xs, ys, label=run.mode, color=COLOURS.get(run.mode), linewidth=1.6)
    ax.set_title(title)
    ax.set_xlabel("time (s)")
    ax.set_ylabel(unit)
    ax.grid(alpha=0.3)
    if column.endswith("_ms"):
        ax.set_yscale("symlog", linthresh=10)
    ax.legend(loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _fmt(value: float, pattern: str) -> str:
    return (
        "—"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (pattern.format(value))
    )


def write_report(directory: Path, result: ScenarioResult) -> Path:
    """Charts (PNG), `result.json` and `index.html` into `directory`; the page's path."""
    directory.mkdir(parents=True, exist_ok=True)
    figures = []
    for column, title, unit in charts_of(result):
        png = _chart_png(column, title, unit, result.runs)
        name = f"{result.name}-{column}.png"
        (directory / name).write_bytes(png)
        figures.append((title, name, base64.b64encode(png).decode()))
    (directory / "result.json").write_text(result.model_dump_json(indent=2))
    esc = html.escape
    head = "".join(f"<th>{esc(r.mode)}</th>" for r in result.runs)
    rows = "".join(
        "<tr><td>{}</td>{}</tr>".format(
            esc(key),
            "".join(f"<td>{esc(_fmt(r.summary.get(key, math.nan), p))}</td>" for r in result.runs),
        )
        for key, p in _summary_rows(result)
    )
    params = "".join(
        f"<li><code>{esc(k)}</code>: {esc(v)}</li>" for k, v in result.parameters.items()
    )
    switched = "".join(
        f"<li><b>{esc(r.mode)}</b>: "
        + (
            ", ".join(f"<code>{esc(k)}={esc(v)}</code>" for k, v in r.settings.items())
            or "defaults"
        )
        + "</li>"
        for r in result.runs
    )
    notes = "".join(f"<li>{esc(n)}</li>" for n in result.notes)
    charts = "".join(
        f'<figure><img alt="{esc(title)}" src="data:image/png;base64,{data}">'
        f'<figcaption>{esc(title)} (<a href="{esc(name)}">{esc(name)}</a>)</figcaption></figure>'
        for title, name, data in figures
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(result.title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 900px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 4px 10px; }}
td:not(:first-child) {{ text-align: right; }} figure {{ margin: 1.5em 0; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>{esc(result.title)}</h1>
<p>{esc(result.description)}</p>
<p>The scenario's figure: <b>{esc(result.metric)}</b> ({esc(result.better)} is better).</p>
<h2>Summary</h2>
<table><tr><th>figure</th>{head}</tr>{rows}</table>
<h2>Modes</h2><ul>{switched}</ul>
<h2>Parameters</h2><ul>{params}</ul>
{f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""}
<h2>Over time</h2>
{charts}
</body></html>
"""
    path = directory / "index.html"
    path.write_text(page)
    return path


def summary_table(result: ScenarioResult) -> Table:
    table = Table(title=f"{result.title}: {result.metric} ({result.better} is better)")
    table.add_column("figure")
    for run in result.runs:
        table.add_column(run.mode, justify="right")
    for key, pattern in _summary_rows(result):
        table.add_row(key, *(_fmt(r.summary.get(key, math.nan), pattern) for r in result.runs))
    return table


def direction_holds(result: ScenarioResult) -> bool | None:
    """Whether streamrec beats naive on the scenario's figure (None: not both modes ran)."""
    by_mode: Mapping[str, ModeRun] = {r.mode: r for r in result.runs}
    if "naive" not in by_mode or "streamrec" not in by_mode:
        return None
    naive = by_mode["naive"].summary[result.metric]
    ours = by_mode["streamrec"].summary[result.metric]
    return ours < naive if result.better == "lower" else ours > naive
