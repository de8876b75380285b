"""`make demo`: the platform end to end on ML-100K, printed as it goes.

The demo is a list of steps, one module per area, run in order against one `DemoContext`.
Each step prints its own part of the report; processes a step starts are registered on the
context and stopped at the end (the stack itself stays up for `streamrec status`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.rule import Rule

from streamrec.demo import analytics as analytics_demo
from streamrec.demo import backbone
from streamrec.demo import content as content_demo
from streamrec.demo import features as features_demo
from streamrec.demo import invalidation as invalidation_demo
from streamrec.demo import llm as llm_demo
from streamrec.demo import models as models_demo
from streamrec.demo import scenario as scenario_demo
from streamrec.demo import serving as serving_demo
from streamrec.infra.settings import Settings
from streamrec.streams.worker_process import WorkerProcess


@dataclass
class DemoContext:
    settings: Settings
    console: Console
    state: dict[str, Any] = field(default_factory=dict)
    workers: list[WorkerProcess] = field(default_factory=list)

    def start_worker(self, name: str, group: str | None = None) -> WorkerProcess:
        worker = WorkerProcess(self.settings, name, group).start()
        self.workers.append(worker)
        return worker


Step = tuple[str, Callable[[DemoContext], None]]

STEPS: list[Step] = [
    ("Local stack", backbone.start_stack),
    ("Topics and data", backbone.load_data),
    ("Features: start the session and trending processors", features_demo.start_processors),
    ("Replay and consume", backbone.replay_and_count),
    ("Features: fresh session features and trending", features_demo.report),
    ("Content: embed the catalog, index its vectors", content_demo.embed_and_index),
    ("Models: train (or reuse), evaluate, promote", models_demo.train_and_promote),
    ("Candidates: kept fresh by the stream", models_demo.candidates),
    ("Serving: HTTP and the request topic", serving_demo.serve_and_ask),
    ("Serving: a short load run", serving_demo.load_run),
    ("Invalidation: a new popular film during a load run", invalidation_demo.viral_item),
    ("LLM enrichment: rate-limited, cached, off the request path", llm_demo.enrich),
    # Before analytics: its simulated users' clicks are what the A/B report counts.
    ("Scenario: the LLM rate limit, naive against StreamRec", scenario_demo.short_scenario),
    ("Analytics: ClickHouse sink and report", analytics_demo.sink_and_report),
    ("Analytics: live dashboard", analytics_demo.dashboard),
]


def select_steps(words: list[str] | None) -> list[Step]:
    """The steps whose title contains one of `words` (case-insensitive); all when None.

    A later step reuses what earlier ones left in the stack (topics, models, Redis), so a
    selection is for re-running a step against a stack that one full demo prepared."""
    if not words:
        return list(STEPS)
    wanted = [w.strip().lower() for w in words if w.strip()]
    chosen = [s for s in STEPS if any(w in s[0].lower() for w in wanted)]
    if not chosen:
        titles = "; ".join(t for t, _ in STEPS)
        raise ValueError(f"no demo step matches {', '.join(wanted)}; the steps: {titles}")
    return chosen


def run_demo(
    settings: Settings, console: Console | None = None, steps: list[str] | None = None
) -> DemoContext:
    console = console or Console()
    # The local demo asks without credentials: its serving worker runs with auth off (the
    # default is on; docs/security.md shows the same steps with a key).
    settings = settings.with_overrides(auth={"mode": "off"})
    ctx = DemoContext(settings=settings, console=console)
    started = time.monotonic()
    selected = select_steps(steps)
    try:
        for title, step in selected:
            console.print(Rule(f"[bold]{title}"))
            step(ctx)
    finally:
        for worker in ctx.workers:
            worker.stop()
    console.print(Rule())
    console.print(
        f"demo finished in {time.monotonic() - started:.1f} s; the stack is still up "
        f"(`streamrec status`, `streamrec down`), logs in {settings.state_dir / 'logs'}"
    )
    if "scenario_report" in ctx.state:
        console.print(f"scenario report (open in a browser): {ctx.state['scenario_report']}")
    return ctx
