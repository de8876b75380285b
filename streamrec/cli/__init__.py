"""`streamrec`: the one CLI that reaches every part.

Sub-commands live in one module each and are registered here explicitly. The settings object
is built once, from the environment, in the callback below and handed to each command.
A `StreamRecError`, or Redis not answering (a stack that is down, not a bug), is printed as
one clear line and exits 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import redis
import typer
from rich.console import Console

from streamrec.cli import analytics as analytics_cmd
from streamrec.cli import catalog as catalog_cmd
from streamrec.cli import config as config_cmd
from streamrec.cli import data, demo, stack, topics, worker
from streamrec.cli import features as features_cmd
from streamrec.cli import index as index_cmd
from streamrec.cli import keys as keys_cmd
from streamrec.cli import llm as llm_cmd
from streamrec.cli import models as models_cmd
from streamrec.cli import replay as replay_cmd
from streamrec.cli import scenario as scenario_cmd
from streamrec.cli import serve as serve_cmd
from streamrec.errors import StreamRecError
from streamrec.infra.settings import Settings
from streamrec.streams.partitions import check_partitions

app = typer.Typer(
    name="streamrec",
    help="StreamRec: a streaming recommendation platform on Kafka.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)

for module in (
    stack,
    topics,
    data,
    replay_cmd,
    worker,
    demo,
    llm_cmd,
    features_cmd,
    catalog_cmd,
    index_cmd,
    serve_cmd,
    keys_cmd,
    analytics_cmd,
    models_cmd,
    config_cmd,
    scenario_cmd,
):
    module.register(app)


@app.callback()
def _settings(
    ctx: typer.Context,
    state_dir: Path | None = typer.Option(
        None,
        "--state-dir",
        help="data, logs and pids of the local stack "
        "[env STREAMREC_STACK__STATE_DIR, default .streamrec]",
    ),
) -> None:
    settings = Settings()
    if state_dir is not None:
        settings = settings.with_overrides(stack={"state_dir": state_dir})
    # Topic names in STREAMREC_KAFKA__PARTITIONS are refused here, as an unknown variable
    # is: the settings cannot know the topics (streams.partitions).
    check_partitions(settings)
    ctx.obj = settings


def main() -> None:
    try:
        app()
    except StreamRecError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except redis.RedisError as exc:  # every command that reads Redis, one way
        err.print(
            f"[bold red]error:[/] Redis did not answer ({exc}); is the stack up? (streamrec up)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
