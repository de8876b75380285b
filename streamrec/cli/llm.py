"""`streamrec llm ...`: the local LLM provider (tests, demo) and enrichment requests."""

from __future__ import annotations

import typer

from streamrec.infra.settings import Settings

llm_app = typer.Typer(help="LLM enrichment: the local provider, enrichment requests.")


def register(app: typer.Typer) -> None:
    app.add_typer(llm_app, name="llm")


@llm_app.command("serve-local")
def serve_local(
    ctx: typer.Context,
    port: int | None = typer.Option(None, help="[env STREAMREC_LLM__LOCAL_PORT, 18080]"),
    limit: int | None = typer.Option(None, help="requests per window [LOCAL_LIMIT, 500]"),
    window: float | None = typer.Option(None, help="rate window, s [LOCAL_WINDOW_S, 60]"),
    latency_min_ms: int | None = typer.Option(None, help="[LOCAL_LATENCY_MIN_MS, 200]"),
    latency_max_ms: int | None = typer.Option(None, help="[LOCAL_LATENCY_MAX_MS, 2000]"),
    failure: str | None = typer.Option(None, help="none | error | hang [LOCAL_FAILURE]"),
) -> None:
    """Run the deterministic OpenAI-compatible provider (429 + Retry-After past its limit)."""
    from streamrec.llm.local_provider import serve

    settings: Settings = ctx.obj
    overrides = {
        k: v
        for k, v in {
            "local_port": port,
            "local_limit": limit,
            "local_window_s": window,
            "local_latency_min_ms": latency_min_ms,
            "local_latency_max_ms": latency_max_ms,
            "local_failure": failure,
        }.items()
        if v is not None
    }
    if overrides:
        settings = settings.with_overrides(llm=overrides)  # a bad value is a SettingsError
    s = settings.llm
    typer.echo(
        f"local LLM provider on http://{s.local_host}:{s.local_port}/v1: "
        f"{s.local_limit} requests per {s.local_window_s:g} s, latency "
        f"{s.local_latency_min_ms}-{s.local_latency_max_ms} ms, failure={s.local_failure}"
    )
    serve(settings)
