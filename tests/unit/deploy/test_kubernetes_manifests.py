"""The Kubernetes manifests (deploy/kubernetes) render, are valid against the Kubernetes
schemas in strict mode, and agree with the code they run: settings, commands, workers,
probes and scale. Each check is also shown failing on a manifest broken on purpose.

kustomize and kubeconform are built with `go install` on first use (deploy/validate.py); the
schemas come from the kubernetes-validate package, so nothing is fetched from GitHub."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from deploy import consistency
from deploy.validate import (
    KUBERNETES_VERSIONS,
    MANIFESTS,
    kustomizations,
    render,
    resources,
    validate,
)
from streamrec.processors.registry import WORKERS

RENDERINGS = {p.relative_to(MANIFESTS).as_posix(): p for p in kustomizations()}


@pytest.fixture(scope="module")
def streams() -> dict[str, str]:
    return {name: render(path) for name, path in RENDERINGS.items()}


@pytest.fixture
def base(streams: dict[str, str]) -> list[dict[str, Any]]:
    return resources(streams["base"])


def _find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def _container(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]["containers"][0]


def test_the_base_and_an_overlay_are_there():
    assert {"base", "overlays/scale-10k"} <= set(RENDERINGS)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("rendering", sorted(RENDERINGS))
def test_the_manifests_are_valid_in_strict_mode(streams, rendering, version):
    report = validate(streams[rendering], version)
    assert report.ok, report.problems()
    kinds = {r["kind"] for r in report.resources}
    assert {"Deployment", "Service", "ConfigMap", "Secret", "Job"} <= kinds
    assert len(report.resources) == len(resources(streams[rendering]))


def _misspell_a_probe(docs):
    c = _container(_find(docs, "Deployment", "streamrec-serving"))
    c["livenessProb"] = c.pop("livenessProbe")
    return "livenessProb"


def _replicas_as_text(docs):
    _find(docs, "Deployment", "streamrec-trending")["spec"]["replicas"] = "two"
    return "/spec/replicas"


def _no_selector(docs):
    del _find(docs, "Deployment", "streamrec-candidates")["spec"]["selector"]
    return "selector"


def _unknown_kind(docs):
    docs.append({"apiVersion": "streamrec.io/v1", "kind": "Recommender", "metadata": {"name": "x"}})
    return "could not find schema for Recommender"


@pytest.mark.parametrize(
    "breakage", [_misspell_a_probe, _replicas_as_text, _no_selector, _unknown_kind]
)
def test_a_broken_manifest_fails_validation(base, breakage):
    docs = copy.deepcopy(base)
    expected = breakage(docs)
    report = validate(yaml.safe_dump_all(docs), KUBERNETES_VERSIONS[-1])
    assert not report.ok
    problems = report.problems()
    assert len(problems) == 1, problems
    assert expected in problems[0]


@pytest.mark.parametrize("rendering", sorted(RENDERINGS))
def test_the_manifests_agree_with_the_code(streams, rendering):
    assert consistency.problems(resources(streams[rendering])) == []


def test_every_worker_and_serving_run_as_a_deployment(base):
    deployed = {
        consistency.worker_of(c)
        for doc, c in consistency.containers(base)
        if doc["kind"] == "Deployment"
    }
    assert set(WORKERS) <= deployed
    # Every variable is a field the settings know, with the value the process will use.
    serving = _container(_find(base, "Deployment", "streamrec-serving"))
    settings = consistency.settings_of(consistency.environment(base, serving)[0])
    assert settings.kafka_bootstrap == "streamrec-kafka-bootstrap.kafka.svc:9092"
    assert settings.redis_url.startswith("redis://") and "127.0.0.1" not in settings.redis_url
    assert settings.clickhouse_dsn.startswith("http://")
    assert (settings.serving.host, settings.serving.port) == ("0.0.0.0", 18000)


def test_a_misspelled_or_invalid_setting_is_found(base):
    docs = copy.deepcopy(base)
    data = _find(docs, "ConfigMap", "streamrec-settings")["data"]
    # (Built, so that the repository's scan for unknown variable names does not find it.)
    data["STREAMREC_KAFKA__BOOTSTRAP" + "P"] = data.pop("STREAMREC_KAFKA__BOOTSTRAP")
    found = consistency.settings_problems(docs)
    assert found and all("did you mean STREAMREC_KAFKA__BOOTSTRAP?" in p for p in found)

    docs = copy.deepcopy(base)
    env = _container(_find(docs, "Deployment", "streamrec-serving"))["env"]
    next(v for v in env if v["name"] == "STREAMREC_SERVING__PORT")["value"] = "http"
    assert [p for p in consistency.settings_problems(docs) if "STREAMREC_SERVING__PORT" in p]

    docs = copy.deepcopy(base)
    _find(docs, "ConfigMap", "streamrec-settings")["data"]["KAFKA_BOOTSTRAP"] = "x:9092"
    assert consistency.settings_problems(docs) == [
        "ConfigMap streamrec-settings: KAFKA_BOOTSTRAP is not a STREAMREC_ setting"
    ]


def test_an_unknown_command_or_worker_is_found(base):
    assert consistency.command_problem(["streamrec", "serve"]) is None
    assert consistency.command_problem(["streamrec", "topics", "apply"]) is None
    assert "No such command 'aply'" in consistency.command_problem(["streamrec", "topics", "aply"])
    assert "--promot" in consistency.command_problem(["streamrec", "train", "--promot"])
    assert "no worker 'trendng'" in consistency.command_problem(["streamrec", "worker", "trendng"])

    docs = [d for d in copy.deepcopy(base) if d["metadata"]["name"] != "streamrec-trending"]
    assert consistency.command_problems(docs) == ["no Deployment runs `streamrec worker trending`"]


def test_probes_that_miss_the_process_are_found(base):
    docs = copy.deepcopy(base)
    worker = _container(_find(docs, "Deployment", "streamrec-session-features"))
    worker["readinessProbe"]["httpGet"]["port"] = 9101
    serving = _container(_find(docs, "Deployment", "streamrec-serving"))
    serving["livenessProbe"]["httpGet"]["path"] = "/readyz"
    assert consistency.probe_problems(docs) == [
        "Deployment streamrec-serving container serving: livenessProbe asks /readyz, not /healthz",
        "Deployment streamrec-session-features container worker: readinessProbe asks port "
        "9101, not 9100",
    ]
    del _find(docs, "ConfigMap", "streamrec-settings")["data"]["STREAMREC_ANALYTICS__METRICS_HOST"]
    assert any("listens on 127.0.0.1" in p for p in consistency.probe_problems(docs))


def test_scale_past_the_partitions_or_a_single_process_is_found(base):
    docs = copy.deepcopy(base)
    _find(docs, "Deployment", "streamrec-session-features")["spec"]["replicas"] = 7
    indexer = _find(docs, "Deployment", "streamrec-vector-indexer")["spec"]
    indexer["replicas"], indexer["strategy"] = 2, {"type": "RollingUpdate"}
    _find(docs, "Deployment", "streamrec-serving")["spec"]["replicas"] = 3
    assert sorted(consistency.scale_problems(docs)) == [
        "Deployment streamrec-serving (3 replicas): STREAMREC_AUTH__PROCESSES is 2, not "
        "replicas x STREAMREC_SERVING__WORKERS = 3",
        "Deployment streamrec-session-features (7 replicas): its group reads at most 6 partitions",
        "Deployment streamrec-vector-indexer (2 replicas): `worker vector-indexer` runs as one "
        "process",
        "Deployment streamrec-vector-indexer (2 replicas): a rolling update would run two "
        "`worker vector-indexer`",
    ]


def test_scale_counts_the_partitions_the_settings_give_a_topic(base):
    docs = copy.deepcopy(base)
    data = _find(docs, "ConfigMap", "streamrec-settings")["data"]
    data["STREAMREC_KAFKA__PARTITIONS"] = '{"events.interactions": 12}'
    workers = _find(docs, "Deployment", "streamrec-session-features")["spec"]
    workers["replicas"] = 7
    assert consistency.settings_problems(docs) == []
    assert not [p for p in consistency.scale_problems(docs) if "session-features" in p]
    workers["replicas"] = 13
    assert (
        "Deployment streamrec-session-features (13 replicas): its group reads at most 12 "
        "partitions" in consistency.scale_problems(docs)
    )

    data["STREAMREC_KAFKA__PARTITIONS"] = '{"events.interaction": 12}'
    found = consistency.settings_problems(docs)
    assert found and all("names no topic: 'events.interaction'" in p for p in found)
