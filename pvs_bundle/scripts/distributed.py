"""Distributed training under torchrun: this process's local rank, with a clear error when torchrun did not start it."""

from __future__ import annotations

import os

TORCHRUN_VARIABLES: tuple[str, ...] = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


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
            f"configs/multi_gpu_train.json must be launched by torchrun, which sets {', '.join(TORCHRUN_VARIABLES)}; "
            f"unset here: {', '.join(missing)}. Run e.g. torchrun --standalone --nproc_per_node=2 -m monai.bundle "
            "run training --config_file \"['configs/train.json','configs/multi_gpu_train.json']\"."
        )
    value = os.environ["LOCAL_RANK"]
    if not value.isdigit():
        raise RuntimeError(f"LOCAL_RANK must be a non-negative integer, not {value!r}.")
    return int(value)
