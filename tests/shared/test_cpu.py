"""Loader workers and torch threads sized from the cores this process may use."""

import os

import pytest
import torch

from scripts.cpu import auto_workers, available_cores, set_threads


def test_available_cores_follows_affinity_and_cgroup_quota(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    assert available_cores(tmp_path / "missing") == affinity
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cores(tmp_path / "cpu.max") == affinity
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # a quota of 1.5 cores: 2 threads may run
    assert available_cores(tmp_path / "cpu.max") == min(affinity, 2)


@pytest.mark.parametrize(("cores", "workers"), [(1, 0), (2, 1), (3, 1), (8, 4), (64, 4)])
def test_auto_workers_leave_the_network_half_the_cores(cores, workers):
    assert auto_workers(cores) == workers


def test_set_threads_sets_torch_and_refuses_nonsense():
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="num_threads must be a positive integer, not 0"):
        set_threads(0)
