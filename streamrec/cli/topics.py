"""`streamrec topics apply | list | schema NAME`."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from streamrec.infra.settings import Settings
from streamrec.streams.admin import TopicManager
from streamrec.topics import BY_NAME

out = Console()
topics_app = typer.Typer(help="The contract topics of topics/.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(topics_app, name="topics")


@topics_app.command(
    "apply",
    help="Create or update every topic (idempotent); grow each to its partition count "
    "(STREAMREC_KAFKA__PARTITIONS over the spec), never shrink.",
)
def apply(ctx: typer.Context) -> None:
    settings: Settings = ctx.obj
    result = TopicManager(settings).apply()
    out.print(
        f"created {len(result.created)}, altered {len(result.altered)}, "
        f"unchanged {len(result.unchanged)} (replication factor {result.replication_factor})"
    )
    for name in result.created:
        out.print(f"  + {name}")
    for name in result.altered:
        grown = result.grown.get(name)
        how = f": {grown[0]} -> {grown[1]} partitions" if grown else ""
        out.print(f"  ~ {name}{how}")
    if result.grown:
        out.print(
            "  grown topics re-key: a key's new messages may go to another partition than its "
            "old ones (docs/deployment.md, Partition counts)"
        )
    for name, (have, want) in sorted(result.above.items()):
        out.print(
            f"  ! {name} has {have} partitions, more than the {want} configured: Kafka cannot "
            f"remove partitions, so it keeps {have}",
            highlight=False,
        )


@topics_app.command("list", help="Show the topics with partitions, policy and end offsets.")
def list_(ctx: typer.Context) -> None:
    settings: Settings = ctx.obj
    table = Table(
        "topic",
        "partitions",
        "replicas",
        "min.insync",
        "cleanup",
        "retention.ms",
        "messages (end offsets)",
    )
    for t in TopicManager(settings).list():
        table.add_row(
            t.name,
            str(t.partitions),
            str(t.replicas),
            t.min_insync_replicas,
            t.cleanup_policy,
            t.retention_ms,
            str(t.end_offsets),
        )
    out.print(table)


@topics_app.command(
    "schema",
    help="Print the JSON Schema of a topic's messages (from its pydantic contract), with the "
    "topic's key and value format under x-topic: what a client of another language builds.",
)
def schema(name: str = typer.Argument(..., help="a topic, e.g. recs.requests")) -> None:
    spec = BY_NAME.get(name)
    if spec is None:
        known = ", ".join(sorted(BY_NAME))
        raise typer.BadParameter(f"no topic {name!r}; the topics are: {known}", param_hint="NAME")
    document = spec.schema.model_json_schema()
    document["x-topic"] = {"name": spec.name, "key": spec.key_field, "value": spec.value_format}
    # Plain print: rich would wrap long lines and colour the JSON, and a pipe wants it raw.
    typer.echo(json.dumps(document, indent=2))
