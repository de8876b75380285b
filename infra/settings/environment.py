"""The `STREAMREC_*` environment checked against the settings' field tree.

pydantic-settings only reads the variables that match a field: one that matches nothing (a
typo of a section, `SERVNG` for `SERVING`, or of a top-level name) is silently dropped,
so the setting the operator meant keeps its default. Every `STREAMREC_` variable must
therefore name a field, and an unknown one is reported with the closest valid name.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from streamrec.infra.errors import SettingsError

PREFIX = "STREAMREC_"
DELIMITER = "__"


def env_name(section: str, field: str) -> str:
    return f"{PREFIX}{section}{DELIMITER}{field}".upper()


def field_tree(settings_cls: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Each section's name and model."""
    tree: dict[str, type[BaseModel]] = {}
    for name, info in settings_cls.model_fields.items():
        model = info.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel), name
        tree[name] = model
    return tree


def valid_names(settings_cls: type[BaseModel]) -> list[str]:
    """Every variable that sets a field: sections are set field by field, never as JSON."""
    return [
        env_name(section, field)
        for section, model in field_tree(settings_cls).items()
        for field in model.model_fields
    ]


def closest(name: str, candidates: Iterable[str]) -> str:
    """The candidate most like `name` (difflib's ratio), whatever the distance."""
    options = list(candidates)
    return (difflib.get_close_matches(name, options, n=1, cutoff=0.0) or options)[0]


def check_environment(settings_cls: type[BaseModel], environ: Mapping[str, str]) -> None:
    """Raise `SettingsError` naming every `STREAMREC_*` variable that sets no field."""
    valid = valid_names(settings_cls)
    known = set(valid)
    # pydantic-settings matches names case-insensitively: so does this check.
    unknown = sorted(k for k in environ if k.upper().startswith(PREFIX) and k.upper() not in known)
    if unknown:
        hints = "; ".join(f"{k} (did you mean {closest(k.upper(), valid)}?)" for k in unknown)
        raise SettingsError(f"unknown environment variable: {hints}")


def check_keys(settings_cls: type[BaseModel], sections: Mapping[str, Mapping[str, object]]) -> None:
    """Raise `SettingsError` naming every unknown section or field of `sections`."""
    tree = field_tree(settings_cls)
    problems: list[str] = []
    for section, fields in sections.items():
        if section not in tree:
            problems.append(f"{section} (did you mean {closest(section, tree)}?)")
            continue
        names = tree[section].model_fields
        problems += [
            f"{section}.{key} (did you mean {section}.{closest(key, names)}?)"
            for key in fields
            if key not in names
        ]
    if problems:
        raise SettingsError(f"unknown setting: {'; '.join(problems)}")


def invalid(exc: ValidationError, from_environment: bool) -> SettingsError:
    """`exc` as one readable error: each bad field and why, never the value (it may be a
    secret)."""
    lines = [_where(err["loc"], from_environment) + f": {err['msg']}" for err in exc.errors()]
    return SettingsError(f"invalid settings: {'; '.join(lines)}")


def _where(loc: Sequence[Any], from_environment: bool) -> str:
    parts = [str(p) for p in loc]
    if from_environment and len(parts) >= 2:
        return env_name(parts[0], parts[1])
    return ".".join(parts)
