"""The scenario report: a self-contained page with every chart embedded, PNGs beside it, the
run's data as JSON, and the terminal table; and the verdict on the scenario's figure."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from rich.console import Console

from streamrec.scenarios.report import (
    ModeRun,
    ScenarioResult,
    charts_of,
    direction_holds,
    print_line,
    summary_table,
    write_report,
)

PNG = b"\x89PNG\r\n\x1a\n"


def result(naive_p99: float = 900.0, ours_p99: float = 40.0) -> ScenarioResult:
    def run(mode: str, p99: float) -> ModeRun:
        series = [
            {"t": float(t), "p50_ms": p99 / 3, "p99_ms": p99 + t, "answers": 10.0, "clicks": 2.0}
            for t in range(5)
        ]
        summary = {"requests": 50.0, "p99_ms": p99, "answered": 0.9, "clicks_per_s": 2.0}
        return ModeRun(mode=mode, series=series, summary=summary, settings={"serving.x": "1"})

    return ScenarioResult(
        name="demo-case",
        title="A <test> scenario",
        description="what goes wrong",
        metric="p99_ms",
        runs=[run("naive", naive_p99), run("streamrec", ours_p99)],
        notes=["a note"],
    )


def test_the_page_embeds_every_chart_and_the_pngs_are_beside_it(tmp_path: Path):
    page = write_report(tmp_path / "out", result())
    text = page.read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    charts = charts_of(result())
    # The measured columns are drawn; the LLM provider's, which no run has, are not.
    assert [c[0] for c in charts] == ["p50_ms", "p99_ms", "answers", "clicks"]
    assert len(images) == len(charts)
    assert all(base64.b64decode(i).startswith(PNG) for i in images)
    assert not list((tmp_path / "out").glob("*llm*"))
    for column, title, _ in charts:
        png = tmp_path / "out" / f"demo-case-{column}.png"
        assert png.read_bytes().startswith(PNG)
        assert title in text
    assert "A &lt;test&gt; scenario" in text  # escaped, not markup
    assert "<th>naive</th><th>streamrec</th>" in text
    assert (tmp_path / "out" / "result.json").exists()
    assert ScenarioResult.model_validate_json((tmp_path / "out" / "result.json").read_text())


def test_the_table_shows_both_modes_and_the_verdict_follows_the_figure():
    console = Console(record=True, width=120)
    console.print(summary_table(result()))
    out = console.export_text()
    assert "naive" in out and "streamrec" in out and "900.0" in out and "40.0" in out
    assert direction_holds(result(900.0, 40.0)) is True
    assert direction_holds(result(40.0, 900.0)) is False
    one = result()
    one.runs = one.runs[:1]
    assert direction_holds(one) is None


def test_a_log_line_keeps_its_mode_prefix_that_rich_would_take_for_markup():
    console = Console(record=True, width=120)
    print_line(console, "[naive] p99 934 ms, answered 100% [/]")
    assert console.export_text().strip() == "[naive] p99 934 ms, answered 100% [/]"
