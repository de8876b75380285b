"""`streamrec train`, `streamrec models list | status | promote | rollback | canary | rollout |
shadow-report | skew-report`, `backfill candidates`."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from streamrec.cli.features import backfill_app
from streamrec.infra.redis_clients import sync_client
from streamrec.infra.settings import Settings

out = Console()
models_app = typer.Typer(
    help="The model registry: list, status, promote, roll back, canary rollout, shadow and "
    "skew reports.",
    no_args_is_help=True,
)
KINDS = ("ranker", "retriever")


def register(app: typer.Typer) -> None:
    app.command("train", help="Train the two-tower and the ranker, evaluate, publish.")(train)
    app.add_typer(models_app, name="models")
    backfill_app.command(
        "candidates", help="Recompute every known user's candidates (rate-limited)."
    )(backfill_candidates)


def train(
    ctx: typer.Context,
    source: str = typer.Option("ml-100k", help="'ml-100k' or a .jsonl/.parquet event log"),
    force: bool = typer.Option(False, help="train even if this data was trained already"),
    promote: bool = typer.Option(False, help="promote the new versions"),
    retriever_epochs: int | None = typer.Option(None, help="override settings.models"),
    ranker_epochs: int | None = typer.Option(None, help="override settings.models"),
    device: str | None = typer.Option(None, help="cpu | cuda (default: settings.models.device)"),
    features: str = typer.Option("log", help="log (point in time from the log) | feast"),
) -> None:
    from streamrec.models.report import metric_table
    from streamrec.models.train import train as run_training

    settings: Settings = ctx.obj
    result = run_training(
        settings,
        source=source,
        force=force,
        retriever_epochs=retriever_epochs,
        ranker_epochs=ranker_epochs,
        device=device,
        features=features,
    )
    verb = "reused (same data and settings)" if result.reused else "trained"
    out.print(f"{verb}: retriever and ranker {result.ranker.version} on {result.device}")
    out.print(metric_table(result.metrics, result.cold_start))
    if not result.reused:
        out.print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items()))
    if promote:
        for kind in KINDS:
            _publish_change(settings, kind, result.ranker.version, rollback=False)


def _publish_change(settings: Settings, kind: str, version: str | None, rollback: bool) -> None:
    from streamrec.models.registry import ModelRegistry
    from streamrec.streams.producer import flush, latency_producer, produce_event
    from streamrec.topics import REGISTRY_CHANGES

    registry = ModelRegistry(settings)
    change = registry.rollback(kind) if rollback else registry.promote(kind, version or "")
    producer = latency_producer(settings)
    produce_event(producer, REGISTRY_CHANGES, change)
    flush(producer, 10.0)
    out.print(f"{change.action}: {kind} -> {change.version} (published to registry.changes)")


@models_app.command("list")
def list_models(ctx: typer.Context, kind: str | None = typer.Option(None)) -> None:
    from streamrec.models.registry import ModelRegistry

    registry = ModelRegistry(ctx.obj)
    table = Table("kind", "version", "created", "NDCG@20", "promoted")
    for k in [kind] if kind else KINDS:
        promoted = registry.promoted(k)
        for v in registry.list(k):
            ndcg = v.manifest.metrics.get("test.two-tower + ranker.ndcg_20")
            table.add_row(
                k,
                v.version,
                v.manifest.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                f"{ndcg:.4f}" if ndcg is not None else "",
                "*" if promoted and promoted.version == v.version else "",
            )
    out.print(table)


@models_app.command("status")
def status(
    ctx: typer.Context,
    kind: str | None = typer.Option(None),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per version"),
) -> None:
    """Every version with its gate verdict and stage (the trainer's candidates included)."""
    from streamrec.models.registry import ModelRegistry
    from streamrec.models.retrain import version_status

    registry = ModelRegistry(ctx.obj)
    if as_json:
        for k in [kind] if kind else KINDS:
            for row in version_status(registry, k):
                typer.echo(row.model_dump_json())
        return
    table = Table(
        "kind",
        "version",
        "created",
        "trigger",
        "stage",
        "gate",
        "NDCG@20 cand / prom, diff [CI]",
        "Recall@20 cand / prom, diff [CI]",
        "reason",
    )
    for k in [kind] if kind else KINDS:
        for row in version_status(registry, k):
            table.add_row(
                row.kind,
                row.version,
                row.created_at,
                row.trigger,
                row.stage,
                row.gate,
                row.figures.get("ndcg_20", ""),
                row.figures.get("recall_20", ""),
                row.reason,
            )
    out.print(table)


@models_app.command("promote")
def promote(
    ctx: typer.Context,
    version: str = typer.Argument(...),
    kind: str | None = typer.Option(None, help="ranker | retriever (default: both)"),
) -> None:
    for k in [kind] if kind else KINDS:
        _publish_change(ctx.obj, k, version, rollback=False)


@models_app.command("rollback")
def rollback(
    ctx: typer.Context,
    kind: str | None = typer.Option(None, help="ranker | retriever (default: both)"),
) -> None:
    for k in [kind] if kind else KINDS:
        _publish_change(ctx.obj, k, None, rollback=True)


@models_app.command("canary")
def canary(ctx: typer.Context, version: str = typer.Argument(...)) -> None:
    """Start a ranker candidate's canary at the first of `rollout.stages` (5% of users)."""
    from streamrec.models.registry import ModelRegistry
    from streamrec.processors.rollout import RolloutController
    from streamrec.processors.trainer import ProducerOutbox

    settings: Settings = ctx.obj

    def no_figures(*_: object) -> None:
        raise AssertionError("start() reads no figures")

    controller = RolloutController(
        settings, ModelRegistry(settings), ProducerOutbox(settings), no_figures
    )
    change = controller.start(version)
    share = (change.rollout or {}).get("share", 1.0)
    out.print(f"{change.action}: ranker {version} serves {share:.0%} of users")


@models_app.command("rollout")
def rollout(
    ctx: typer.Context,
    once: bool = typer.Option(False, help="judge the running stage once and exit"),
) -> None:
    """Judge the running canary every `rollout.interval_s`: advance, promote or roll back."""
    import time

    from streamrec.analytics.store import store_session
    from streamrec.models.registry import ModelRegistry
    from streamrec.processors.rollout import RolloutController, clickhouse_figures
    from streamrec.processors.trainer import ProducerOutbox

    settings: Settings = ctx.obj
    registry = ModelRegistry(settings)
    outbox = ProducerOutbox(settings)
    while True:
        with store_session(settings) as client:
            controller = RolloutController(
                settings, registry, outbox, clickhouse_figures(settings, client)
            )
            result = controller.step()
        if result is None:
            out.print("no ranker canary is running")
            return
        verdict, change = result
        out.print(f"{verdict.action}: {verdict.reason}")
        if once or (change is not None and change.action != "canary"):
            return
        time.sleep(settings.rollout.interval_s)


@models_app.command("shadow-report")
def shadow_report(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="one JSON object per version pair"),
) -> None:
    """The shadow ranker beside the served one: agreement@k, scores, model time."""

    from streamrec.serving.shadow import KEY_PREFIX, ShadowSummary, merge, render

    settings: Settings = ctx.obj
    store = sync_client(settings, socket_timeout=5.0)
    summaries = [
        ShadowSummary.model_validate_json(value)
        for key in store.scan_iter(match=f"{KEY_PREFIX}*")
        for value in store.hgetall(key).values()
    ]
    reports = merge(summaries)
    if as_json:
        for r in reports:
            typer.echo(r.model_dump_json())
        return
    typer.echo(render(reports))


@models_app.command("skew-report")
def skew_report(
    ctx: typer.Context,
    version: str | None = typer.Option(None, help="a ranker version (default: the promoted)"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Train/serve skew of the ranker's inputs: PSI per feature, serving vs training."""

    from streamrec.analytics.skew import render
    from streamrec.analytics.skew_source import read_skew

    settings: Settings = ctx.obj
    client = sync_client(settings, socket_timeout=5.0)
    try:
        report = read_skew(settings, client, version)
    finally:
        client.close()
    typer.echo(report.model_dump_json(indent=2) if as_json else render(report))


def backfill_candidates(
    ctx: typer.Context,
    rate: float | None = typer.Option(None, help="users per second (settings.candidates)"),
) -> None:
    import asyncio

    from streamrec.candidates.backfill import backfill

    report = asyncio.run(backfill(ctx.obj, rate))
    out.print(
        f"candidates: {report.users:,} users rewritten in {report.seconds:.1f} s "
        f"({report.users / max(report.seconds, 1e-9):,.0f} users/s, limit {report.rate:g}/s), "
        f"model {report.model_version}"
    )
