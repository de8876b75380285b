"""The ranker's torch threads follow the cores the serving process may run on (a pinned
container's), not the machine's core count."""

from __future__ import annotations

import os

import pytest
import torch

from streamrec.infra.settings import Settings
from streamrec.serving.worker import set_ranker_threads


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(("workers", "threads"), [(1, 3), (2, 1)])
def test_threads_follow_the_process_affinity(monkeypatch, restore_threads, workers, threads):
    # A pod given 4 cores of a 64-core node: os.cpu_count() still says 64.
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    set_ranker_threads(Settings().with_overrides(serving={"workers": workers}))
    assert torch.get_num_threads() == threads


def test_the_setting_sets_the_count_whatever_the_cores(monkeypatch, restore_threads):
    # A container that is not pinned sees every core of the node.
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    set_ranker_threads(Settings().with_overrides(serving={"ranker_threads": 1}))
    assert torch.get_num_threads() == 1
