"""The import namespace and its layers, read from the source (import-linter's grimp walks only
the `streamrec/` folder, not the folders that pyproject maps into the namespace).

- Installing the project puts exactly one top-level package into site-packages: every package
  setuptools builds is `streamrec` or below it.
- Each area imports only from the layers below it; areas on one layer do not import each other.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Top to bottom. Names on one line are siblings that must not import each other.
LAYERS: list[list[str]] = [
    ["__main__"],
    ["cli"],
    ["demo"],
    ["scenarios"],
    ["processors", "serving"],
    ["candidates", "invalidation", "analytics", "llm"],
    ["vectors"],
    ["models"],
    ["features"],
    ["streams"],
    ["infra", "topics"],
    ["errors", "breaker"],
]


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _modules() -> dict[str, Path]:
    """Every module of the namespace, by dotted name, from pyproject's folder mapping."""
    found: dict[str, Path] = {}
    for package, folder in _setuptools()["package-dir"].items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if package == "streamrec" and len(parts) and parts[0] in _mapped_areas():
                continue
            found[name] = path
    return found


def _mapped_areas() -> set[str]:
    return {p.split(".")[1] for p in _setuptools()["package-dir"] if p != "streamrec"}


def _area(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "streamrec" and len(parts) > 1 else None


def _imports(module: str, path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            out.append((node.lineno, target))
    return out


def _rank(area: str) -> int:
    for i, names in enumerate(LAYERS):
        if area in names:
            return i
    raise AssertionError(f"area {area!r} is in no layer of {__file__}")


def test_every_built_package_is_inside_the_one_namespace() -> None:
    packages = _setuptools()["packages"]
    assert packages and all(p == "streamrec" or p.startswith("streamrec.") for p in packages)
    listed = set(packages)
    for package, folder in _setuptools()["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            name = ".".join([package, *rel])
            if package == "streamrec" and rel and rel[0] in _mapped_areas():
                continue
            assert name in listed, f"{init.parent} is a package that pyproject does not build"


def test_every_area_has_a_layer() -> None:
    areas = {a for m in _modules() if (a := _area(m))}
    assert "serving" in areas and "topics" in areas and "errors" in areas
    for area in areas:
        _rank(area)


def test_no_area_imports_upward_or_sideways() -> None:
    violations: list[str] = []
    for module, path in _modules().items():
        source = _area(module)
        if source is None:
            continue
        for line, target in _imports(module, path):
            dest = _area(target)
            if dest is None or dest == source:
                continue
            if _rank(dest) <= _rank(source):
                violations.append(f"{path.relative_to(ROOT)}:{line} {module} imports {target}")
    assert not violations, "imports against the layers:\n" + "\n".join(violations)


def test_the_check_sees_a_violation() -> None:
    """The reader itself: an upward import in a parsed module is found."""
    tree_module = "streamrec.topics.example"
    fake = ROOT / "build" / "layers-probe.py"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text("from streamrec.serving import core\nfrom . import base\n")
    try:
        found = _imports(tree_module, fake)
    finally:
        fake.unlink()
    assert (1, "streamrec.serving") in found and (2, "streamrec.topics") in found
    assert _rank("serving") < _rank("topics")
