"""The scenario report opens in headless Chromium without a console message and shows every
chart of the run, for the columns each scenario adds (outage, cache, LLM, clicks)."""

from __future__ import annotations

import math
import subprocess
import tempfile
from pathlib import Path

import pytest

from streamrec.scenarios.report import ModeRun, ScenarioResult, charts_of, write_report
from tests.integration.analytics import browser

pytestmark = [pytest.mark.integration]

COLUMNS = ("p50_ms", "p99_ms", "answers", "error_rate", "level_FULL", "level_POPULAR", "clicks")
EXTRA = ("redis_paused", "hit_ratio", "computations", "llm_calls")


def _run(mode: str, scale: float) -> ModeRun:
    series = [
        {"t": float(t), **{c: scale * (1 + math.sin(t / 3)) for c in COLUMNS + EXTRA}}
        for t in range(20)
    ]
    series[3]["p99_ms"] = math.nan  # a second with no requests is a gap, not an error
    summary = {"error_rate": 0.1 * scale, "full_again_s": 1.5, "hit_ratio_drop": 0.02 * scale}
    return ModeRun(mode=mode, series=series, summary=summary, settings={"serving.x": "y"})


def _console_lines(url: str) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        done = subprocess.run(
            [
                browser.chromium(),
                *browser.FLAGS,
                f"--user-data-dir={profile}",
                "--enable-logging=stderr",
                "--v=0",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "<figure>" in done.stdout
    return [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


def test_the_report_page_opens_without_console_messages_and_shows_its_charts(tmp_path: Path):
    result = ScenarioResult(
        name="redis-failover",
        title="A <title> & charts",
        description="every column a scenario draws",
        metric="error_rate",
        runs=[_run("naive", 2.0), _run("streamrec", 1.0)],
        notes=["a note"],
    )
    page = write_report(tmp_path / "report", result)
    assert _console_lines(page.as_uri()) == []
    dom = browser.dump_dom(page.as_uri())
    assert dom.count('src="data:image/png;base64,') == len(charts_of(result)) == 11


def test_the_console_check_sees_a_script_error(tmp_path: Path):
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><figure></figure><script>nope();</script></body></html>")
    assert any("nope is not defined" in line for line in _console_lines(bad.as_uri()))
