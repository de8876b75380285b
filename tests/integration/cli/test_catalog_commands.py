"""`streamrec catalog upsert | remove` publish single items to the real catalog.items."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from streamrec.cli import app
from streamrec.streams import codecs
from streamrec.topics import CATALOG_ITEMS, CatalogItem
from tests.kafka_helpers import end_offsets, read_range

pytestmark = pytest.mark.integration


def test_upsert_and_remove_publish_one_item_each(stack, unique):
    before = end_offsets(stack, CATALOG_ITEMS.name)
    runner = CliRunner()
    env = stack.to_env()
    item_id = f"cli-{unique}"
    args = ["catalog", "upsert", item_id, "--title", "Toy Story 5", "--year", "2026"]
    args += ["--genre", "Animation", "--genre", "Comedy", "--popularity", "100"]
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["catalog", "remove", item_id], env=env)
    assert result.exit_code == 0, result.output
    published = read_range(
        stack, CATALOG_ITEMS.name, before, end_offsets(stack, CATALOG_ITEMS.name)
    )
    mine = [codecs.decode(CATALOG_ITEMS, v) for k, v in published if k == item_id.encode()]
    assert len(mine) == 2
    upsert, removal = mine
    assert isinstance(upsert, CatalogItem) and upsert.op == "upsert"
    assert (upsert.title, upsert.year, upsert.genres) == (
        "Toy Story 5",
        2026,
        ["Animation", "Comedy"],
    )
    assert upsert.popularity_hint == 100.0
    assert removal.op == "remove"


def test_an_invalid_item_is_refused_before_anything_is_published(stack, unique):
    before = end_offsets(stack, CATALOG_ITEMS.name)
    result = CliRunner().invoke(
        app,
        ["catalog", "upsert", f"cli-{unique}", "--title", "X", "--year", "12"],
        env=stack.to_env(),
    )
    assert result.exit_code != 0
    assert end_offsets(stack, CATALOG_ITEMS.name) == before
