"""The indexer's working table: dense rows, stable ids, order-free digest."""

from __future__ import annotations

import numpy as np
import pytest

from streamrec.vectors import VectorIndexError, VectorTable
from streamrec.vectors.ids import faiss_id
from tests.unit.vectors.conftest import table_of, unit_rows


def test_upsert_replaces_and_remove_keeps_rows_dense():
    rows = unit_rows(5)
    table = table_of(rows)
    table.upsert("i1", rows[4])
    assert len(table) == 5
    np.testing.assert_array_equal(table.vector("i1"), rows[4])
    assert table.remove("i0") and not table.remove("i0")
    assert sorted(table.item_ids()) == ["i1", "i2", "i3", "i4"]
    matrix = table.matrix()
    for row, item in zip(matrix, table.item_ids(), strict=True):
        np.testing.assert_array_equal(row, table.vector(item))


def test_table_grows_past_its_initial_capacity():
    rows = unit_rows(3000)
    table = table_of(rows)
    assert len(table) == 3000
    np.testing.assert_array_equal(table.vector("i2999"), rows[2999])


def test_a_vector_of_another_dimension_is_refused():
    table = table_of(unit_rows(2, dim=8))
    with pytest.raises(VectorIndexError, match="8"):
        table.upsert("x", np.ones(4, dtype=np.float32))


def test_digest_ignores_arrival_order_but_not_content():
    rows = unit_rows(50)
    forward = table_of(rows)
    backward = VectorTable()
    for i in reversed(range(50)):
        backward.upsert(f"i{i}", rows[i])
    assert forward.digest() == backward.digest()
    backward.upsert("i7", rows[8])
    assert forward.digest() != backward.digest()


def test_faiss_ids_are_stable_non_negative_int64():
    assert faiss_id("item-1") == faiss_id("item-1") != faiss_id("item-2")
    assert 0 <= faiss_id("x") < 2**63
