"""Distributed runs under torchrun: local rank, each rank's share of the cases, and results gathered on rank 0.

Training (configs/multi_gpu_train.json) shares out its training and validation cases; inference and evaluation
(configs/multi_gpu_inference.json, configs/multi_gpu_evaluate.json) deal their inputs out with :func:`input_shard`,
so each is processed exactly once, and gather their per-case results in input order with :func:`gather_in_order`.
``local_rank`` fails with a message saying how to launch when torchrun did not start the process.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence, Sized
from typing import Any, TypeVar

import torch.distributed
from monai.data import DistributedSampler, partition_dataset

logger = logging.getLogger("pvs_bundle.distributed")

TORCHRUN_VARIABLES: tuple[str, ...] = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

T = TypeVar("T")


def local_rank() -> int:
    """Return this process's rank on its node, as torchrun sets it in ``LOCAL_RANK``.

    Returns:
        The local rank (0 … processes per node - 1); on a GPU node, the index of this process's GPU.

    Raises:
        RuntimeError: when a variable that torchrun sets is missing (the config was started with plain
            ``python -m monai.bundle``), or when ``LOCAL_RANK`` is not a non-negative integer.
    """
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise RuntimeError(
            f"configs/multi_gpu_*.json must be launched by torchrun, which sets {', '.join(TORCHRUN_VARIABLES)}; "
            f"unset here: {', '.join(missing)}. Run e.g. torchrun --standalone --nproc_per_node=2 -m monai.bundle "
            "run training --config_file \"['configs/train.json','configs/multi_gpu_train.json']\"."
        )
    value = os.environ["LOCAL_RANK"]
    if not value.isdigit():
        raise RuntimeError(f"LOCAL_RANK must be a non-negative integer, not {value!r}.")
    return int(value)


def _rank_and_world_size(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """The given rank and world size, or those of the initialised process group (0 and 1 without one)."""
    initialised = torch.distributed.is_available() and torch.distributed.is_initialized()
    if rank is None:
        rank = torch.distributed.get_rank() if initialised else 0
    if world_size is None:
        world_size = torch.distributed.get_world_size() if initialised else 1
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0 … world_size - 1 = {world_size - 1}, not {rank}.")
    return rank, world_size


def training_shard(
    data: Sequence[dict],
    partition: bool = True,
    seed: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
) -> list[dict]:
    """Return the training cases this process caches: its own share of them, or all of them.

    With ``partition`` each of the ``world_size`` processes caches and trains on a different ``1 / world_size`` of
    the cases (shuffled with ``seed``, the same on every rank, so the shares are disjoint and cover every case), so
    the training cache is split between the processes instead of held whole by each; shares are evened out by
    repeating a few cases, so every rank runs the same number of iterations (DDP needs that), and with fewer cases
    than processes each rank gets one. Without it every process caches every case and a ``DistributedSampler``
    over all of them (see :func:`training_sampler`) hands each rank a different share every epoch: better mixing,
    ``world_size`` times the memory.

    Args:
        data: the training split's datalist entries (``{"id", "image", "label"}``).
        partition: whether to split the cases between the processes.
        seed: seed of the shuffle before the split (``seed`` in train.json).
        rank: this process's rank; defaults to the process group's (0 without one).
        world_size: the number of processes; defaults to the process group's (1 without one).

    Returns:
        The cases this process caches.
    """
    rank, world_size = _rank_and_world_size(rank, world_size)
    if not partition or world_size == 1:
        logger.info("Rank %d of %d caches all %d training cases.", rank, world_size, len(data))
        return list(data)
    if len(data) < world_size:  # fewer cases than processes: one each, some cases on several ranks
        shard = [data[rank % len(data)]] if data else []
    else:
        shards = partition_dataset(list(data), num_partitions=world_size, shuffle=True, seed=seed, even_divisible=True)
        shard = shards[rank]
    ids = ", ".join(str(case.get("id", case.get("image"))) for case in shard)
    logger.info("Rank %d of %d caches %d of %d training cases: %s.", rank, world_size, len(shard), len(data), ids)
    return shard


def validation_shard(data: Sequence[dict], rank: int | None = None, world_size: int | None = None) -> list[dict]:
    """Return the validation cases this process caches and scores; the metrics are gathered from all ranks.

    Rank r takes cases r, r + N, r + 2N, … (N processes), so every case is scored once and each rank caches only
    its own. With fewer cases than processes each rank still needs one to run its evaluator: rank r takes case
    r mod n, some cases count more than once in the gathered metrics, and a warning says so.

    Args:
        data: the validation split's datalist entries.
        rank: this process's rank; defaults to the process group's (0 without one).
        world_size: the number of processes; defaults to the process group's (1 without one).

    Returns:
        The cases this process validates on.
    """
    rank, world_size = _rank_and_world_size(rank, world_size)
    if not data or len(data) >= world_size:
        return list(data)[rank::world_size]
    if rank == 0:
        logger.warning(
            "%d validation cases for %d processes: each rank validates one, so some cases count more than once in "
            "the validation metrics. Use at least %d validation cases (--split_fractions) or fewer processes.",
            len(data),
            world_size,
            world_size,
        )
    return [data[rank % len(data)]]


def training_sampler(dataset: Sized, partitioned: bool = True, seed: int = 0) -> DistributedSampler:
    """Return the sampler of the training loader under DDP, reshuffled every epoch (``set_epoch``).

    Args:
        dataset: the training dataset of this process (its share when ``partitioned``).
        partitioned: whether ``dataset`` holds only this process's share (:func:`training_shard`); then the
            sampler shuffles the whole share, otherwise it hands this rank its ``1 / world_size`` of the cases.
        seed: the shuffle's seed; with a share, offset by the rank so ranks do not shuffle in step.

    Returns:
        A ``DistributedSampler`` that pads to equal lengths, so every rank runs the same number of iterations.
    """
    if partitioned:
        rank, _ = _rank_and_world_size(None, None)
        return DistributedSampler(dataset, even_divisible=True, num_replicas=1, rank=0, shuffle=True, seed=seed + rank)
    return DistributedSampler(dataset, even_divisible=True, shuffle=True, seed=seed)


def process_rank_and_count() -> tuple[int, int]:
    """This process's rank and the number of processes (0 and 1 without a process group)."""
    return _rank_and_world_size(None, None)


def is_main_process() -> bool:
    """Whether this process writes the run's shared files: rank 0, or the only process."""
    return process_rank_and_count()[0] == 0


def barrier() -> None:
    """Wait until every process gets here (nothing without a process group)."""
    if process_rank_and_count()[1] > 1:
        torch.distributed.barrier()


def sum_over_ranks(value: float, device: torch.device | None = None) -> float:
    """The sum of ``value`` over every process (``value`` itself without a process group).

    Args:
        value: this process's number.
        device: where the reduction's tensor lives (the process's GPU under NCCL); the CPU by default.

    Returns:
        The same sum on every rank.
    """
    if process_rank_and_count()[1] == 1:
        return float(value)
    total = torch.tensor([float(value)], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(total)
    return float(total.item())


def input_shard(data: Sequence[T], allow_empty: bool = True) -> list[T]:
    """Return the inputs this process handles: rank r of N takes inputs r, r + N, r + 2N, ...

    Unlike a ``DistributedSampler`` nothing is repeated to even the shares out, so every input is processed
    exactly once; :func:`gather_in_order` puts the per-input results back in input order.

    Args:
        data: every input, in the same order on every rank.
        allow_empty: whether a rank may get no input (fewer inputs than processes).

    Returns:
        This rank's inputs, in input order.

    Raises:
        ValueError: when a rank gets no input and ``allow_empty`` is false.
    """
    rank, world_size = process_rank_and_count()
    if not allow_empty and len(data) < world_size:
        raise ValueError(
            f"the number of cases must be at least the number of processes {world_size}, not {len(data)}: "
            f"run torchrun with --nproc_per_node={max(len(data), 1)} or fewer processes."
        )
    shard = list(data)[rank::world_size]
    logger.info("Rank %d of %d handles %d of %d input(s).", rank, world_size, len(shard), len(data))
    return shard


def gather_in_order(shard_results: Sequence[Any], total: int | None = None) -> list[Any]:
    """Gather every rank's per-input results (of :func:`input_shard`'s shares) on every rank, in input order.

    Args:
        shard_results: this rank's results, one per input of its share, in order.
        total: the number of inputs (default: the sum of the shares).

    Returns:
        Every rank's results, interleaved back into input order (this rank's own without a process group).

    Raises:
        ValueError: when the gathered shares do not add up to ``total`` inputs.
    """
    _, world_size = process_rank_and_count()
    if world_size == 1:
        return list(shard_results)
    shares: list[Any] = [None] * world_size
    torch.distributed.all_gather_object(shares, list(shard_results))
    total = sum(len(share) for share in shares) if total is None else total
    if [len(share) for share in shares] != [len(range(r, total, world_size)) for r in range(world_size)]:
        raise ValueError(
            f"the shares gathered must be those of input_shard over {total} inputs, not of sizes "
            f"{[len(share) for share in shares]}."
        )
    return [shares[i % world_size][i // world_size] for i in range(total)]
