"""The built wheel installs ONE top-level package, `streamrec`, next to PyPI's `llm` and
`analytics` without touching them (docs/adr/0091-one-namespace-mapped-folders.md).

The fresh virtualenv reuses this environment's third-party packages through a `.pth` line
naming its site-packages: Python adds that directory to `sys.path` but does not run the `.pth`
files inside it, so the editable finder of the development install stays off and every
`streamrec` module must come from the wheel. Needs PyPI for `llm` and `analytics`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# Pinned: what is tested is the name clash, not these projects' newer releases.
LLM = "llm==0.36"
# A Python 2 sdist (`import analytics` is a SyntaxError on Python 3), so it is located with
# find_spec rather than imported; --no-deps because its pin python-dateutil==1.5 would
# shadow the dateutil pandas needs.
ANALYTICS = "analytics==0.6.5"
PACKAGE_DATA = (
    "streamrec/infra/kafka/pom.xml",
    "streamrec/infra/kafka/log4j2.yaml",
    "streamrec/features/feature_repo/feature_store.yaml",
)

# Run inside the fresh venv: where each name imports from, and whether every installed file
# of llm, analytics and streamrec still has the hash its RECORD gives.
PROBE = r"""
import base64, hashlib, importlib.metadata as md, importlib.util, json, sys

def intact(name):
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        return None
    bad = []
    for f in dist.files or []:
        if f.hash is None:
            continue
        path = dist.locate_file(f)
        try:
            data = open(path, "rb").read()
        except OSError:
            bad.append(str(f))
            continue
        digest = base64.urlsafe_b64encode(hashlib.new(f.hash.mode, data).digest()).rstrip(b"=")
        if digest.decode() != f.hash.value:
            bad.append(str(f))
    return bad

def origin(name):
    spec = importlib.util.find_spec(name)
    return None if spec is None else spec.origin

out = {
    "llm": origin("llm"),
    "llm_dist": str(md.distribution("llm").locate_file("llm/__init__.py")),
    "analytics": origin("analytics"),
    "analytics_dist": str(md.distribution("analytics").locate_file("analytics/__init__.py")),
    "streamrec": origin("streamrec"),
    "intact": {n: intact(n) for n in ("llm", "analytics", "streamrec")},
    "editable": [m for m in sys.modules if "__editable__" in m]
    + [repr(f) for f in sys.meta_path if "__editable__" in type(f).__module__],
}
import llm
out["llm_imported"] = llm.__file__
out["llm_api"] = callable(getattr(llm, "get_model", None))
if out["streamrec"] is not None:
    import streamrec.infra.kafka_broker as broker
    import streamrec.serving.app
    out["streamrec_files"] = [broker.__file__, streamrec.serving.app.__file__]
    out["pom"] = str(broker.POM) if broker.POM.is_file() else None
print(json.dumps(out))
"""


def run(*argv: str | Path, cwd: Path, timeout: float = 300) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    result = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{argv}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def source_tree(dest: Path) -> Path:
    """The working tree's files, tracked or not ignored, without build leftovers: a stale
    build/ in the checkout would otherwise end up in the wheel."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        src = ROOT / rel
        if src.is_file():  # a tracked file deleted in the working tree is listed too
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = source_tree(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("wheel")
    log = run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
        "-w", out, src, cwd=out,
    )  # fmt: skip
    # setuptools warns when a data folder is not a listed package; the build stays quiet.
    assert "absent from the `packages` configuration" not in log, log
    (built,) = out.glob("streamrec-*.whl")
    return built


def wheel_names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def test_wheel_holds_one_top_level_package(wheel: Path) -> None:
    names = wheel_names(wheel)
    (dist_info,) = {n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")}
    with zipfile.ZipFile(wheel) as zf:
        record = zf.read(f"{dist_info}/RECORD").decode().splitlines()
        top_level = zf.read(f"{dist_info}/top_level.txt").decode().split()
    recorded = {line.split(",")[0] for line in record if line}
    assert recorded == set(names)
    assert {n.split("/")[0] for n in names} - {dist_info} == {"streamrec"}
    assert top_level == ["streamrec"]


def test_wheel_holds_every_package_and_its_data(wheel: Path) -> None:
    names = set(wheel_names(wheel))
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ]
    expected = set(PACKAGE_DATA)
    for package, folder in mapping.items():
        prefix = package.replace(".", "/")
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.relative_to(ROOT / folder).as_posix()
            expected.add(f"{prefix}/{rel}")
    dashboards = sorted((ROOT / "analytics" / "dashboard").glob("*.html"))
    assert dashboards
    expected |= {f"streamrec/analytics/dashboard/{p.name}" for p in dashboards}
    assert sorted(expected - names) == []


def test_wheel_installs_next_to_pypi_llm_and_analytics(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    purelib = Path(
        run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp_path)
        .strip()
        .splitlines()[-1]
    )
    (purelib / "streamrec_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    pip = (sys.executable, "-m", "pip", "--python", python, "install", "-q")
    run(*pip, LLM, cwd=tmp_path)
    run(*pip, "--no-deps", ANALYTICS, cwd=tmp_path)
    run(*pip, "--no-deps", wheel, cwd=tmp_path)

    def probe() -> dict:
        # cwd is not the checkout: its llm/ and analytics/ folders must not be on sys.path.
        return json.loads(run(python, "-c", PROBE, cwd=tmp_path).strip().splitlines()[-1])

    def theirs_intact(seen: dict) -> None:
        assert seen["llm"] == seen["llm_dist"] == seen["llm_imported"]
        assert Path(seen["llm"]).is_relative_to(purelib)
        assert seen["llm_api"]
        assert seen["analytics"] == seen["analytics_dist"]
        assert Path(seen["analytics"]).is_relative_to(purelib)
        assert seen["intact"]["llm"] == [] and seen["intact"]["analytics"] == []
        assert seen["editable"] == []

    installed = probe()
    theirs_intact(installed)
    assert installed["intact"]["streamrec"] == []
    assert Path(installed["streamrec"]).is_relative_to(purelib)
    assert all(Path(f).is_relative_to(purelib) for f in installed["streamrec_files"])
    assert installed["pom"] and Path(installed["pom"]).is_relative_to(purelib)
    help_text = run(venv / "bin" / "streamrec", "--help", cwd=tmp_path)
    assert "Usage" in help_text and "streamrec" in help_text

    run(sys.executable, "-m", "pip", "--python", python, "uninstall", "-y", "streamrec",
        cwd=tmp_path)  # fmt: skip
    removed = probe()
    theirs_intact(removed)
    # Gone entirely: the development install's editable finder did not come along.
    assert removed["streamrec"] is None
    assert not (purelib / "streamrec").exists()
