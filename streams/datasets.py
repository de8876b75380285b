"""Fetching MovieLens-100K without committing it: from the PyPI wheel of recbole.

`recbole==1.2.1` carries ML-100K under `recbole/dataset_example/ml-100k/`. We download that
wheel with `pip download --no-deps` into the data cache and extract only those files.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from streamrec.infra.settings import Settings
from streamrec.streams.errors import DataError

ML100K_FILES = ("ml-100k.inter", "ml-100k.item", "ml-100k.user")
DATASETS = ("ml-100k",)


def ml100k_dir(settings: Settings) -> Path:
    return settings.data.cache_dir / "ml-100k"


def fetch(settings: Settings, name: str = "ml-100k", force: bool = False) -> Path:
    """Make the dataset's files present in the cache; returns their directory."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    target = ml100k_dir(settings)
    if not force and all((target / f).exists() for f in ML100K_FILES):
        return target
    version = settings.data.recbole_version
    wheels = settings.data.cache_dir / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    wheel = next(wheels.glob(f"recbole-{version}-*.whl"), None)
    if wheel is None or force:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                "--disable-pip-version-check",
                f"recbole=={version}",
                "-d",
                str(wheels),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        wheel = next(wheels.glob(f"recbole-{version}-*.whl"), None)
        if result.returncode != 0 or wheel is None:
            raise DataError(f"pip could not download recbole=={version}:\n{result.stderr[-2000:]}")
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        for fname in ML100K_FILES:
            member = f"recbole/dataset_example/ml-100k/{fname}"
            try:
                data = zf.read(member)
            except KeyError:
                raise DataError(f"{wheel.name} has no {member}") from None
            tmp = target / (fname + ".part")
            tmp.write_bytes(data)
            tmp.replace(target / fname)
    return target
