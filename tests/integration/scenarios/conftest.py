"""A stack of the module's own with the trained ranker promoted; the scenario seeds the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamrec.infra.settings import Settings
from tests.integration.serving.conftest import (  # noqa: F401 - fixtures shared with serving
    install_ranker,
    movielens,
    trained_ranker,
)


@pytest.fixture(scope="module")
def scenario_stack(isolated_stack: Settings, trained_ranker: Path) -> Settings:  # noqa: F811
    install_ranker(isolated_stack, trained_ranker)
    return isolated_stack
