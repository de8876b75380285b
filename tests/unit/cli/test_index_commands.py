"""`streamrec index list | rollback | similar` on a state dir with real FAISS snapshots."""

from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

from streamrec.cli import app
from streamrec.infra.settings import Settings
from streamrec.vectors import SnapshotStore, VectorTable


def _table(n: int) -> VectorTable:
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(n, 16)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    table = VectorTable()
    for i, row in enumerate(rows):
        table.upsert(f"item-{i}", row)
    return table


def test_list_rollback_and_similar(tmp_path):
    settings = Settings().with_overrides(stack={"state_dir": tmp_path})
    store = SnapshotStore(settings)
    first = store.publish(_table(40), "m@1")
    second = store.publish(_table(50), "m@1")
    runner = CliRunner()
    state = ["--state-dir", str(tmp_path)]

    listed = runner.invoke(app, [*state, "index", "list"])
    assert listed.exit_code == 0, listed.output
    assert first.version in listed.output and second.version in listed.output
    assert f"* │ {second.version}" in listed.output

    # (no broker in a unit test: the announcement on registry.changes is left out)
    rolled = runner.invoke(app, [*state, "index", "rollback", first.version, "--no-announce"])
    assert rolled.exit_code == 0, rolled.output
    assert store.promoted().version == first.version

    similar = runner.invoke(app, [*state, "index", "similar", "item-3", "-k", "3"])
    assert similar.exit_code == 0, similar.output
    assert first.version in similar.output
    assert similar.output.count("item-") == 3 and "item-3\n" not in similar.output

    unknown = runner.invoke(app, [*state, "index", "rollback", "nope", "--no-announce"])
    assert unknown.exit_code != 0
