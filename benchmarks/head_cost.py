"""What the full-resolution head costs per training step and per inference window, side by side with none.

The demo recipe's network (``configs/train.json`` + ``configs/demo.json``: EfficientNet-B0 UNet++, group norm) built
with ``full_res_channels`` 0 (the library's UNet++), then with each width of ``--widths``
(:mod:`scripts.model.full_resolution`). A training step is forward, Dice + BCE, backward and AdamW on a batch of
``--batch`` patches of ``--patch`` voxels (the demo's 2 x 4 of 32^3), at the precision the bundle picks on this CPU
(bf16 autocast where it computes bf16 natively); an inference window is one forward pass of a ``--window``^3 patch
in evaluation mode without gradients, at the same precision. The variants take turns, one step each, so that a
drift of the machine's speed touches them alike; the median of ``--steps`` turns after two warm-up turns.

Run from the repository root, alone on the machine::

    python benchmarks/head_cost.py                 # widths 4 8 16; 8 x 32^3 steps; 96^3 windows
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser

BUNDLE_ROOT = Path(__file__).resolve().parents[1] / "pvs_bundle"
sys.path.insert(0, str(BUNDLE_ROOT))

from scripts.model.network import network_from_settings  # noqa: E402
from scripts.model.precision import DTYPES, resolve_precision  # noqa: E402
from scripts.model.release import cpu_name  # noqa: E402
from scripts.training.losses import PVSLoss  # noqa: E402


def demo_settings() -> dict:
    """The model settings that ``train.json`` + ``demo.json`` build the network with."""
    parser = ConfigParser()
    parser.read_config([str(BUNDLE_ROOT / "configs/train.json"), str(BUNDLE_ROOT / "configs/demo.json")])
    parser["bundle_root"] = str(BUNDLE_ROOT)
    return dict(parser.get_parsed_content("model_settings"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--window", type=int, default=96)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    settings = demo_settings()
    widths = [0, *args.widths]
    networks = {w: network_from_settings({**settings, "full_res_channels": w}, encoder_weights=None) for w in widths}
    optimizers = {w: torch.optim.AdamW(n.parameters(), lr=1e-4) for w, n in networks.items()}
    precision = resolve_precision("auto", "cpu")
    autocast = {"device_type": "cpu", "dtype": DTYPES["bf16"], "enabled": precision == "bf16"}
    rng = np.random.default_rng(0)
    shape = (args.batch, 1, *(args.patch,) * 3)
    label = torch.from_numpy((rng.random(shape) < 0.02).astype(np.float32))
    image = label * 0.6 + torch.from_numpy(rng.normal(0.2, 0.1, shape).astype(np.float32))
    window = torch.from_numpy(rng.normal(0.2, 0.1, (1, 1, *(args.window,) * 3)).astype(np.float32))
    loss_function = PVSLoss({"dice": 0.5, "bce": 0.5})
    train: dict[int, list[float]] = {w: [] for w in widths}
    infer: dict[int, list[float]] = {w: [] for w in widths}
    for turn in range(args.steps + 2):
        for w in widths:
            network, optimizer = networks[w], optimizers[w]
            network.train()
            begin = time.perf_counter()
            optimizer.zero_grad()
            with torch.autocast(**autocast):
                logits = network(image)
            loss_function(logits.float(), label).backward()
            optimizer.step()
            middle = time.perf_counter()
            network.eval()
            with torch.no_grad(), torch.autocast(**autocast):
                network(window)
            end = time.perf_counter()
            if turn >= 2:
                train[w].append(middle - begin)
                infer[w].append(end - middle)
    print(
        f"Demo network (train.json + demo.json), precision {precision}; training step {args.batch} x {args.patch}^3, "
        f"inference window {args.window}^3; median of {args.steps} turns; CPU: {cpu_name()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print("| full_res_channels | parameters | training step (s) | vs none | inference window (s) | vs none |")
    print("|---|---|---|---|---|---|")
    base_train, base_infer = statistics.median(train[0]), statistics.median(infer[0])
    for w in widths:
        step, window_s = statistics.median(train[w]), statistics.median(infer[w])
        params = sum(p.numel() for p in networks[w].parameters())
        ratios = f"{step / base_train:.3f}x | {window_s:.3f} | {window_s / base_infer:.3f}x"
        print(f"| {w} | {params:,} | {step:.3f} | {ratios} |")


if __name__ == "__main__":
    main()
