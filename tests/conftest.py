"""Shared fixtures: tiny non-cubic BIDS datasets written as real NIfTI files, and bundle command runners."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLE_ROOT = REPO_ROOT / "pvs_bundle"
CONFIGS = BUNDLE_ROOT / "configs"
SPACING = (0.799998, 0.8, 0.8)


def affine_for(spacing=SPACING, origin=(-20.0, -30.0, -10.0)) -> np.ndarray:
    """A RAS affine with the given voxel size."""
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    return affine


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None, dtype=np.int16) -> Path:
    """Write a NIfTI file (int16 like ds005595 unless told), creating its folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(dtype), affine if affine is not None else affine_for()), str(path))
    return path


def synthetic_case(shape=(40, 48, 36), seed=0, n_tubes=6) -> tuple[np.ndarray, np.ndarray]:
    """A head-like blob with bright vertical tubes (the PVS) and their mask."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    head = (grid**2).sum(0) < 0.8
    image = np.where(head, 400.0, 0.0) + rng.normal(0, 20, shape)
    mask = np.zeros(shape, dtype=np.int16)
    for _ in range(n_tubes):
        x, y = rng.integers(8, shape[0] - 8), rng.integers(8, shape[1] - 8)
        z0 = int(rng.integers(6, shape[2] // 2))
        mask[x : x + 2, y : y + 2, z0 : z0 + int(rng.integers(6, 12))] = 1
    mask &= head.astype(np.int16)
    image[mask > 0] = 1000.0
    return np.clip(image, 0, None), mask


def make_bids_dataset(
    root: Path,
    subjects=("001", "002", "003", "004", "005"),
    sessions: tuple[str, ...] = (),
    shape=(40, 48, 36),
    empty: tuple[str, ...] = (),
    ext: str = ".nii.gz",
) -> Path:
    """Write a ds005595-style dataset: sub-X/[ses-Y/]anat/*_T2w and derivatives/mask/sub-X/[ses-Y/]*_desc-mask_PVS."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "test", "BIDSVersion": "1.2.1"}))
    for i, sub in enumerate(subjects):
        for ses in sessions or (None,):
            prefix = f"sub-{sub}" + (f"_ses-{ses}" if ses else "")
            rel = Path(f"sub-{sub}") / (f"ses-{ses}" if ses else "")
            image, mask = synthetic_case(shape, seed=i)
            if sub in empty:
                mask[:] = 0
            write_nifti(root / rel / "anat" / f"{prefix}_T2w{ext}", image)
            write_nifti(root / "derivatives" / "mask" / rel / f"{prefix}_desc-mask_PVS{ext}", mask)
    return root


@pytest.fixture
def bids_dataset(tmp_path: Path) -> Path:
    """Five subjects, one of them with an empty mask, non-cubic volumes."""
    return make_bids_dataset(tmp_path / "ds", subjects=("001", "002", "003", "004", "005", "006"), empty=("006",))


def pin_worker_to_its_cores() -> None:
    """Give each pytest-xdist worker (-n auto) its own cores; the bundle runs it starts inherit them.

    Two torch processes on one core spin on each other (10-20 times slower each); pinned, each worker's bundle runs
    see only its cores, so the bundle's own automatic threads and loader workers (scripts/cpu.py) fit them.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw") or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    share = cores[int(worker[2:]) :: int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))] or cores
    os.sched_setaffinity(0, share)


def threads_per_worker() -> int:
    """Torch threads for one test process: the cores it may run on, at most 2."""
    return max(1, min(2, len(os.sched_getaffinity(0))))


pin_worker_to_its_cores()
torch.set_num_threads(threads_per_worker())


def bundle_env() -> dict[str, str]:
    """Environment for bundle subprocesses: CPU only, this worker's share of the cores, offline hub cache."""
    env = dict(os.environ)
    env.update({"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": str(threads_per_worker()), "PYTHONUNBUFFERED": "1"})
    return env


def run_bundle(args: list[str], cwd: Path = BUNDLE_ROOT, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run ``python -m monai.bundle <args>`` for real and return the finished process (output captured)."""
    return subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args],
        cwd=cwd,
        env=bundle_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_dirs(root: Path, dataset: Path) -> list[str]:
    """Command-line overrides that point a run at ``dataset`` and keep its outputs under ``root``."""
    return ["--dataset_dir", str(dataset), "--output_dir", str(root / "eval"), "--ckpt_dir", str(root / "models")]


# Overrides that make a training run small enough for CI on 2 CPU cores.
TINY_TRAINING = [
    "--encoder_name",
    "efficientnet-b0",
    "--encoder_weights",
    "null",
    "--decoder_channels",
    "[32,16,8,8,4]",
    "--patch_size",
    "[32,32,32]",
    "--num_samples",
    "2",
    "--batch_size",
    "1",
    "--num_workers",
    "0",
    "--max_epochs",
    "2",
    "--sw_batch_size",
    "2",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/e2e/ slow (the tests elsewhere that run a process carry the mark themselves)."""
    for item in items:
        if "e2e" in item.path.relative_to(Path(__file__).parent).parts:
            item.add_marker(pytest.mark.slow)
