"""What each thin-structure loss term costs per training step, side by side with Dice + BCE alone.

One training step of the shipped model's network (``models/model.json``: EfficientNet-B0 UNet++, group
norm) on a batch of ``--batch`` synthetic-like patches (curved tubes in noise) of ``--patch`` voxels: forward, loss,
backward, AdamW, at the precision the bundle picks on this CPU (bf16 autocast where it computes bf16 natively). The
loss is ``scripts.training.losses.PVSLoss`` with Dice + BCE only, then with each term on (weight 1), then all three;
the label skeletons are precomputed, as the preprocessing cache holds them. Also timed: computing the skeletons
themselves per patch (what the cache saves at each step). Median of ``--steps`` steps after two warm-up steps.

Run from the repository root, alone on the machine::

    python benchmarks/loss_cost.py                 # batch 8 of 32^3, 10 steps
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

BUNDLE_ROOT = Path(__file__).resolve().parents[1] / "pvs_bundle"
sys.path.insert(0, str(BUNDLE_ROOT))

from scripts.model.network import network_from_settings  # noqa: E402
from scripts.model.precision import DTYPES, resolve_precision  # noqa: E402
from scripts.model.release import cpu_name  # noqa: E402
from scripts.training.losses import PVSLoss, label_skeleton  # noqa: E402

VARIANTS: dict[str, dict[str, float]] = {
    "Dice + BCE": {},
    "+ Skeleton Recall": {"skeleton_recall": 1.0},
    "+ soft clDice": {"cldice": 1.0},
    "+ blob": {"blob": 1.0},
    "+ all three": {"skeleton_recall": 1.0, "cldice": 1.0, "blob": 1.0},
}


def tubes(rng: np.random.Generator, patch: int, count: int = 6) -> np.ndarray:
    """A patch label with ``count`` short curved tubes of 1-2 voxel radius."""
    grid = np.indices((patch,) * 3).reshape(3, -1).T.astype(np.float32)
    label = np.zeros(patch**3, dtype=bool)
    for _ in range(count):
        start, end = rng.uniform(4, patch - 4, size=(2, 3))
        points = np.linspace(start, end, 16) + rng.normal(0, 1, size=(16, 3))
        distance = np.min(np.linalg.norm(grid[:, None] - points[None], axis=2), axis=1)
        label |= distance <= rng.uniform(1.0, 2.0)
    return label.reshape((patch,) * 3).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    settings = json.loads((BUNDLE_ROOT / "models/model.json").read_text())
    network = network_from_settings(settings, encoder_weights=None)
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-4)
    precision = resolve_precision("auto", "cpu")
    rng = np.random.default_rng(0)
    labels = np.stack([[tubes(rng, args.patch)] for _ in range(args.batch)])
    images = torch.from_numpy(labels * 0.6 + rng.normal(0.2, 0.1, labels.shape).astype(np.float32))
    start = time.perf_counter()
    skeletons = np.stack([[label_skeleton(item[0])] for item in labels])
    skeleton_ms = (time.perf_counter() - start) * 1000 / args.batch
    target = torch.from_numpy(np.concatenate([labels, skeletons], axis=1))
    rows = []
    for name, extra in VARIANTS.items():
        loss_function = PVSLoss({"dice": 0.5, "bce": 0.5, **extra})
        times = []
        for step in range(args.steps + 2):
            begin = time.perf_counter()
            optimizer.zero_grad()
            with torch.autocast("cpu", dtype=DTYPES["bf16"], enabled=precision == "bf16"):
                logits = network(images)
            loss = loss_function(logits.float(), target)
            loss.backward()
            optimizer.step()
            if step >= 2:
                times.append(time.perf_counter() - begin)
        rows.append((name, statistics.median(times)))
    base = rows[0][1]
    print(
        f"Training step, {args.batch} x {args.patch}^3 patches, shipped network, precision {precision}; "
        f"CPU: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print("| loss | step (s) | vs Dice + BCE |\n|---|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} | {seconds / base:.2f}x |")
    print(f"Skeleton of one label patch (what the cache saves per step and patch): {skeleton_ms:.1f} ms")


if __name__ == "__main__":
    main()
