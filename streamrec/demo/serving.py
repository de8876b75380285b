"""Demo steps of the serving worker: answers over HTTP and the request topic, a short load run.

What earlier steps produced is used as it is (the promoted ranker, candidates, trending
lists, user features); whatever is missing for the demo's users is written per the stores'
contracts (`scenarios.seed`) and the report says so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from rich.table import Table

from streamrec.infra.redis_clients import sync_client
from streamrec.models.registry import ModelRegistry
from streamrec.scenarios.report import print_line
from streamrec.scenarios.seed import MovieLens, seed_candidates, seed_popular, seed_user_features
from streamrec.serving.process import ServeProcess
from streamrec.topics.stores import POPULAR, USER_CANDIDATES

if TYPE_CHECKING:
    from streamrec.demo import DemoContext

DEMO_USERS = [str(u) for u in range(1, 101)]


def _prepare(ctx: DemoContext, ml: MovieLens) -> list[str]:
    s = ctx.settings
    done = []
    if ModelRegistry(s).promoted("ranker") is None:
        from streamrec.models.train import train

        result = train(s, retriever_epochs=1, ranker_epochs=1)
        ModelRegistry(s).promote("ranker", result.ranker.version)
        done.append(f"trained and promoted ranker {result.ranker.version} (1 epoch)")
    client = sync_client(s)
    if not client.exists(POPULAR.key(window=s.serving.popular_window)):
        seed_popular(s, ml)
        done.append("seeded the trending lists")
    missing = [u for u in DEMO_USERS if not client.exists(USER_CANDIDATES.key(user_id=u))]
    if missing:
        seed_candidates(s, ml, missing)
        seed_user_features(s, ml, missing)
        done.append(f"seeded candidates and features of {len(missing)} users")
    return done


def _show(ctx: DemoContext, title: str, body: dict, titles: dict[str, str]) -> None:
    table = Table(title=title)
    for col in ("#", "item", "title", "score", "why"):
        table.add_column(col)
    for n, item in enumerate(body["items"][:5], 1):
        table.add_row(
            str(n),
            item["item_id"],
            titles.get(item["item_id"], ""),
            f"{item['score']:.3f}",
            item.get("explanation") or "",
        )
    ctx.console.print(table)
    ctx.console.print(
        f"level [bold]{body['level']}[/], model {body['model_version']}, "
        f"{body['latency_ms']:.1f} ms"
    )


def serve_and_ask(ctx: DemoContext) -> None:
    s = ctx.settings
    ml = MovieLens.load(s)
    titles = {i.item_id: i.title for i in ml.items}
    for line in _prepare(ctx, ml):
        print_line(ctx.console, line)
    t0 = time.monotonic()
    server = ServeProcess(s).start()
    ctx.workers.append(server)  # type: ignore[arg-type] - stopped with the demo's workers
    ctx.state["serving_url"] = server.url
    ctx.console.print(f"streamrec serve ready in {time.monotonic() - t0:.1f} s at {server.url}")
    r = httpx.get(f"{server.url}/v1/users/1/recommendations", params={"k": 10}, timeout=10)
    _show(ctx, "GET /v1/users/1/recommendations (HTTP)", r.json(), titles)
    r = httpx.get(f"{server.url}/v1/users/new-visitor/recommendations", params={"k": 5})
    _show(ctx, "an unknown user (cold start)", r.json(), titles)
    body = _ask_over_topic(ctx, "7")
    _show(ctx, "user 7 over recs.requests (a plain Kafka client)", body, titles)


def _ask_over_topic(ctx: DemoContext, user_id: str) -> dict:
    from streamrec.serving.topic_client import RequestTopicClient

    client = RequestTopicClient(ctx.settings, "demo")
    try:
        # The first request waits for the worker's consumer to join its group; one that
        # waited past its budget is answered at once from memory (POPULAR). The second
        # shows the steady path.
        first, first_rtt = client.ask_until_answered(user_id, 30, k=10)
        resp, rtt = client.ask_until_answered(user_id, 30, k=10)
    finally:
        client.close()
    ctx.console.print(
        f"first reply in {first_rtt:.1f} ms (level {first.level}; it waited for the worker's "
        f"consumer group to form), then correlation id {resp.correlation_id} in {rtt:.1f} ms"
    )
    return resp.model_dump(mode="json")


def load_run(ctx: DemoContext) -> None:
    """5 s of open-loop load (vegeta, or hey) at 100 req/s across 100 users."""
    url = ctx.state["serving_url"]
    vegeta = shutil.which("vegeta") or str(Path.home() / "go" / "bin" / "vegeta")
    targets = "\n".join(f"GET {url}/v1/users/{u}/recommendations" for u in DEMO_USERS)
    if shutil.which(vegeta):
        out = subprocess.run(
            [vegeta, "attack", "-rate=100/s", "-duration=5s"],
            input=targets.encode(),
            capture_output=True,
            check=True,
        ).stdout
        report = json.loads(
            subprocess.run(
                [vegeta, "report", "-type=json"], input=out, capture_output=True, check=True
            ).stdout
        )
        lat = report["latencies"]
        ctx.console.print(
            f"vegeta, 100 req/s for 5 s: p50 {lat['50th'] / 1e6:.1f} ms, "
            f"p95 {lat['95th'] / 1e6:.1f} ms, p99 {lat['99th'] / 1e6:.1f} ms, "
            f"success {report['success'] * 100:.1f}%"
        )
        return
    if shutil.which("hey") is None:
        ctx.console.print("no load generator: `apt-get install hey` or `go install vegeta`")
        return
    out = subprocess.run(
        ["hey", "-z", "5s", "-q", "10", "-c", "10", f"{url}/v1/users/1/recommendations"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    summary = [line for line in out.splitlines() if "%" in line and "in" in line]
    ctx.console.print(
        "hey, 10 workers x 10 req/s for 5 s: " + "; ".join(s.strip() for s in summary)
    )
