"""The rendered manifests checked against the code they run, which a schema cannot see.

- settings: each container's environment (its ConfigMaps, Secrets and `env`) is what a
  process would read at start-up; its `STREAMREC_` names go through the settings' own check
  (`check_environment`, which stops a process on a name that sets no field) and its values
  through the settings' validation;
- commands: every container runs `streamrec ...`, and the CLI parses its arguments; every
  `streamrec worker NAME` names a worker of `processors.registry.WORKERS`, and every worker
  has a Deployment;
- probes: each Deployment's probes reach the port the process listens on (serving's HTTP
  port, a worker's metrics port), bound on every interface, with `/healthz` for liveness
  and `/readyz` for readiness;
- scale: a consumer group gets no more processes than the partitions of the topics it reads
  (each topic's count as the container's settings make it: `STREAMREC_KAFKA__PARTITIONS`
  over the spec),
  a worker that must run alone has at most one replica and is replaced by `Recreate`,
  serving's rate-limit share (`auth.processes`) counts its replicas, and more than one
  analytics sink needs a ClickHouse server (embedded chDB has one owner process).

Each check returns the problems it found, as sentences; none means consistent.
"""

from __future__ import annotations

import base64
import json
import typing
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pydantic import ValidationError
from typer.testing import CliRunner

from streamrec.infra.settings import Settings, SettingsError
from streamrec.infra.settings.environment import DELIMITER, PREFIX, check_environment, invalid
from streamrec.processors.registry import WORKERS
from streamrec.streams.partitions import check_partitions, partitions_of
from streamrec.topics import (
    CACHE_INVALIDATIONS,
    CATALOG_ITEMS,
    EVENTS_INTERACTIONS,
    FEATURES_CHANGED,
    RECS_SERVED,
    TopicSpec,
)

Doc = dict[str, Any]
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job")

# The topics each scalable worker's consumer group reads (docs/architecture.md, Processors):
# past the most partitions among them, another process gets none.
GROUP_INPUTS: dict[str, tuple[TopicSpec, ...]] = {
    "interaction-counter": (EVENTS_INTERACTIONS,),
    "session-features": (EVENTS_INTERACTIONS,),
    "trending": (EVENTS_INTERACTIONS,),
    "candidates": (EVENTS_INTERACTIONS, FEATURES_CHANGED, CACHE_INVALIDATIONS),
    "content-pipeline": (CATALOG_ITEMS,),
    "analytics-sink": (EVENTS_INTERACTIONS, RECS_SERVED, CATALOG_ITEMS),
}
# Workers whose state or output is one per deployment (docs/architecture.md, Scaling out).
ONE_PROCESS = frozenset({"vector-indexer", "invalidation", "llm-enricher", "trainer"})


def _name(doc: Doc) -> str:
    return f"{doc.get('kind')} {doc.get('metadata', {}).get('name')}"


def _pod_spec(doc: Doc) -> Doc:
    return doc.get("spec", {}).get("template", {}).get("spec", {})


def containers(docs: Sequence[Doc]) -> Iterator[tuple[Doc, Doc]]:
    """(workload, container) for every container and init container of every workload."""
    for doc in docs:
        if doc.get("kind") in WORKLOADS:
            spec = _pod_spec(doc)
            for c in [*spec.get("initContainers", []), *spec.get("containers", [])]:
                yield doc, c


def argv(container: Doc) -> list[str]:
    return [str(a) for a in [*container.get("command", []), *container.get("args", [])]]


def worker_of(container: Doc) -> str | None:
    """NAME of a container running `streamrec worker NAME`."""
    args = argv(container)
    return args[2] if args[:2] == ["streamrec", "worker"] and len(args) > 2 else None


def _sources(docs: Sequence[Doc]) -> dict[tuple[str, str], dict[str, str]]:
    """Each ConfigMap's and Secret's keys and values, by (kind, name)."""
    out: dict[tuple[str, str], dict[str, str]] = {}
    for doc in docs:
        kind, name = doc.get("kind"), doc.get("metadata", {}).get("name", "")
        if kind == "ConfigMap":
            out[(kind, name)] = {k: str(v) for k, v in (doc.get("data") or {}).items()}
        elif kind == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
            out[(kind, name)] = data | {k: str(v) for k, v in (doc.get("stringData") or {}).items()}
    return out


def environment(docs: Sequence[Doc], container: Doc) -> tuple[dict[str, str], list[str]]:
    """The variables the container starts with, as Kubernetes sets them (later wins: envFrom
    in order, then env); and the problems found (a missing ConfigMap or Secret)."""
    sources = _sources(docs)
    env: dict[str, str] = {}
    problems: list[str] = []
    for ref in container.get("envFrom", []):
        for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            if key in ref:
                found = sources.get((kind, ref[key]["name"]))
                if found is None and not ref[key].get("optional"):
                    problems.append(f"{kind} {ref[key]['name']} is not in the manifests")
                env |= {ref.get("prefix", "") + k: v for k, v in (found or {}).items()}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
        else:  # valueFrom: a name the process sees, with a value known only in the cluster
            env[var["name"]] = ""
    return env, problems


def settings_of(env: Mapping[str, str]) -> Settings:
    """The settings a process started with `env` would build: unknown `STREAMREC_` names
    and invalid values raise `SettingsError`, as at a real start-up."""
    check_environment(Settings, env)
    sections: dict[str, dict[str, str]] = {}
    for key, value in env.items():
        if key.upper().startswith(PREFIX):
            section, _, field = key[len(PREFIX) :].lower().partition(DELIMITER)
            sections.setdefault(section, {})[field] = _decoded(section, field, value)
    try:
        # model_validate runs the validators without reading this process's environment.
        settings = Settings.model_validate(sections)
    except ValidationError as exc:
        error = invalid(exc, from_environment=True)
    else:
        check_partitions(settings)  # what the CLI checks at start-up
        return settings
    raise error


def _decoded(section: str, field: str, value: str) -> object:
    """`value` as pydantic-settings reads it: a list, set or mapping field's from JSON."""
    model = Settings.model_fields[section].annotation
    info = getattr(model, "model_fields", {}).get(field)
    if info is None or typing.get_origin(info.annotation) not in (dict, list, set, tuple):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value  # the validation then names the variable


def settings_problems(docs: Sequence[Doc]) -> list[str]:
    problems = []
    for doc in docs:  # a key that is not a STREAMREC_ setting reaches no setting at all
        if doc.get("kind") in ("ConfigMap", "Secret"):
            for key in _sources([doc]).get((doc["kind"], doc["metadata"]["name"]), {}):
                if not key.startswith(PREFIX):
                    problems.append(f"{_name(doc)}: {key} is not a {PREFIX} setting")
    for doc, c in containers(docs):
        env, missing = environment(docs, c)
        problems += [f"{_name(doc)} container {c['name']}: {m}" for m in missing]
        try:
            settings_of(env)
        except SettingsError as exc:
            problems.append(f"{_name(doc)} container {c['name']}: {exc}")
    return problems


def command_problem(args: Sequence[str]) -> str | None:
    """Why `args` is not a command line the `streamrec` CLI accepts, or None. The CLI itself
    parses it (with `--help`, so nothing runs): an unknown command or option is refused."""
    from streamrec.cli import app

    if not args or args[0] != "streamrec":
        return f"{list(args)} does not run streamrec"
    shown = " ".join(args)
    result = CliRunner().invoke(app, [*args[1:], "--help"])
    if result.exit_code != 0:
        # The error panel's text, without its frame.
        lines = [line.strip(" │╭╮╰╯─") for line in result.output.splitlines()]
        skip = ("Error", "Usage:", "Try ")
        message = " ".join(line for line in lines if line and not line.startswith(skip))
        return f"`{shown}`: {message.strip() or f'exit status {result.exit_code}'}"
    if args[1:2] == ["worker"] and (len(args) < 3 or args[2] not in WORKERS):
        name = args[2] if len(args) > 2 else ""
        return f"`{shown}`: no worker {name!r} (known: {', '.join(sorted(WORKERS))})"
    return None


def command_problems(docs: Sequence[Doc]) -> list[str]:
    problems = []
    for doc, c in containers(docs):
        problem = command_problem(argv(c))
        if problem:
            problems.append(f"{_name(doc)} container {c['name']}: {problem}")
    deployed = {worker_of(c) for doc, c in containers(docs) if doc["kind"] == "Deployment"}
    problems += [
        f"no Deployment runs `streamrec worker {name}`" for name in sorted(set(WORKERS) - deployed)
    ]
    if not any(argv(c)[:2] == ["streamrec", "serve"] for _, c in containers(docs)):
        problems.append("no Deployment runs `streamrec serve`")
    return problems


def _port_number(container: Doc, port: Any) -> int | None:
    if isinstance(port, int):
        return port
    named = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    return named.get(port)


def probe_problems(docs: Sequence[Doc]) -> list[str]:
    problems = []
    wanted = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for doc, c in containers(docs):
        if doc["kind"] != "Deployment":
            continue
        where = f"{_name(doc)} container {c['name']}"
        try:
            settings = settings_of(environment(docs, c)[0])
        except SettingsError:
            continue  # settings_problems reports it
        if argv(c)[:2] == ["streamrec", "serve"]:
            host, port = settings.serving.host, settings.serving.port
        else:
            host, port = settings.analytics.metrics_host, settings.analytics.metrics_port
        if host != "0.0.0.0":
            problems.append(f"{where}: listens on {host}, which the kubelet cannot reach")
        for probe, path in wanted.items():
            get = c.get(probe, {}).get("httpGet")
            if get is None:
                problems.append(f"{where}: no {probe} over HTTP")
                continue
            if get.get("path") != path:
                problems.append(f"{where}: {probe} asks {get.get('path')}, not {path}")
            if _port_number(c, get.get("port")) != port:
                problems.append(f"{where}: {probe} asks port {get.get('port')}, not {port}")
    return problems


def scale_problems(docs: Sequence[Doc]) -> list[str]:
    problems = []
    for doc, c in containers(docs):
        if doc["kind"] != "Deployment":
            continue
        replicas = doc["spec"].get("replicas", 1)
        where = f"{_name(doc)} ({replicas} replicas)"
        name = worker_of(c)
        if name in ONE_PROCESS:
            if replicas > 1:
                problems.append(f"{where}: `worker {name}` runs as one process")
            if doc["spec"].get("strategy", {}).get("type") != "Recreate":
                problems.append(f"{where}: a rolling update would run two `worker {name}`")
        try:
            settings = settings_of(environment(docs, c)[0])
        except SettingsError:
            continue  # settings_problems reports it
        inputs = GROUP_INPUTS.get(name or "")
        if inputs:
            most = max(partitions_of(settings, spec) for spec in inputs)
            if replicas > most:
                problems.append(f"{where}: its group reads at most {most} partitions")
        if name == "analytics-sink" and replicas > 1 and settings.clickhouse_dsn.startswith("chdb"):
            problems.append(f"{where}: embedded chDB has one owner process; use a server DSN")
        if argv(c)[:2] == ["streamrec", "serve"]:
            processes = settings.auth.processes or settings.serving.workers
            if processes != replicas * settings.serving.workers:
                problems.append(
                    f"{where}: STREAMREC_AUTH__PROCESSES is {processes}, not replicas x "
                    f"STREAMREC_SERVING__WORKERS = {replicas * settings.serving.workers}"
                )
    return problems


def problems(docs: Sequence[Doc]) -> list[str]:
    """Every check's problems."""
    return [
        *settings_problems(docs),
        *command_problems(docs),
        *probe_problems(docs),
        *scale_problems(docs),
    ]
