"""CPU cores this process may use, and the loader workers and torch threads that fit them.

``os.cpu_count()`` counts the host's cores; a container or a batch job often gets fewer (an affinity mask, a cgroup
CPU quota). The configs size ``num_workers`` and torch's intra-op threads from what is available here, and a user
overrides either (``--num_workers N``, ``--num_threads N``).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import torch

logger = logging.getLogger("pvs_bundle.cpu")

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
MAX_AUTO_WORKERS = 4


def available_cores(cgroup_cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """Cores this process may run on: its affinity mask, capped by a cgroup v2 CPU quota when one is set."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = cgroup_cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return cores
    if quota != "max":
        cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    return cores


def auto_workers(cores: int | None = None) -> int:
    """DataLoader workers that leave the network its cores: half of them, at most 4 (1 on 2 cores, 0 on 1)."""
    cores = available_cores() if cores is None else cores
    return min(MAX_AUTO_WORKERS, cores // 2)


def set_threads(num_threads: int) -> int:
    """Set torch's intra-op threads for this process.

    Args:
        num_threads: threads for one operator (the cores available, by default in the configs).

    Returns:
        The number set.

    Raises:
        ValueError: when ``num_threads`` is not a positive integer.
    """
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads must be a positive integer, not {num_threads!r}.")
    torch.set_num_threads(num_threads)
    logger.info("torch threads: %d (%d cores available)", num_threads, available_cores())
    return num_threads
