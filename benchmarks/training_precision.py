"""CPU training steps/s in fp32 against bf16 autocast, side by side, in one run.

One step is the bundle's training step on random patches: the UNet++ of ``configs/train.json`` (here with the
demo's settings by default: EfficientNet-B0, GroupNorm, no pretrained weights), its DiceCE loss and AdamW, a batch
of ``batch_size`` x ``num_samples`` patches, forward under ``AutocastInferer``'s CPU autocast for bf16 (forced even
where the CPU has no native bfloat16, to measure it) and backward. Each (patch size, precision) runs in a fresh
child process, so its peak resident memory (``VmHWM``) is its own.

Run from the repository root::

    python benchmarks/training_precision.py                       # 32³ and 64³ patches, 5 timed steps each
    python benchmarks/training_precision.py --patch_sizes 96 --encoder efficientnet-b7 --norm batch
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

BUNDLE_ROOT = Path(__file__).resolve().parents[1] / "pvs_bundle"
sys.path.insert(0, str(BUNDLE_ROOT))  # the configs reach scripts/ as monai.bundle would: from the bundle root

from monai.bundle import ConfigParser  # noqa: E402

from scripts.cpu import available_cores  # noqa: E402
from scripts.model.precision import autocast_network  # noqa: E402

CONFIG = BUNDLE_ROOT / "configs" / "train.json"
PRECISIONS = ("fp32", "bf16")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", default="efficientnet-b0", help="encoder_name of the UNet++")
    parser.add_argument("--norm", default="group", choices=("batch", "group"), help="the network's norm layers")
    parser.add_argument("--patch_sizes", type=int, nargs="+", default=[32, 64], help="cubic patch edges")
    parser.add_argument("--patches", type=int, default=8, help="patches per step (batch_size x num_samples)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps, after one warm-up step")
    parser.add_argument("--threads", type=int, default=available_cores(), help="CPU threads")
    parser.add_argument("--run", nargs=2, help=argparse.SUPPRESS)  # patch edge and precision, in the children
    return parser.parse_args(argv)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (``VmHWM``), in MiB."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


def measure(args: argparse.Namespace, edge: int, precision: str) -> dict[str, float]:
    """Steps/s of the bundle's training step on random patches of ``edge``³ at ``precision``."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    parser = ConfigParser()
    parser.read_config(str(CONFIG))
    parser.update({"encoder_name": args.encoder, "encoder_weights": None, "norm": args.norm, "patch_size": [edge] * 3})
    network = parser.get_parsed_content("network_def").train()
    loss_function = parser.get_parsed_content("loss")
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3, weight_decay=1e-5)
    forward = autocast_network(network, torch.bfloat16) if precision == "bf16" else network
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(args.patches, 1, edge, edge, edge, generator=generator)
    labels = (torch.rand(args.patches, 1, edge, edge, edge, generator=generator) > 0.97).float()

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_function(forward(images), labels)
        loss.backward()
        optimizer.step()
        return float(loss)

    step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = time.perf_counter() - start
    return {"steps_per_s": args.steps / seconds, "peak_rss_mib": peak_rss_mib()}


def main() -> None:
    args = parse_args()
    if args.run is not None:
        edge, precision = int(args.run[0]), args.run[1]
        print(json.dumps(measure(args, edge, precision)))
        return
    results = {}
    for edge in args.patch_sizes:
        for precision in PRECISIONS:
            command = [sys.executable, __file__, *sys.argv[1:], "--run", str(edge), precision]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results[edge, precision] = json.loads(out.strip().splitlines()[-1])
            print(f"{edge}³ {precision}: {results[edge, precision]['steps_per_s']:.3f} steps/s", flush=True)
    print(
        f"\nUNet++ {args.encoder} ({args.norm} norm), {args.patches} patches per step, DiceCE + AdamW, "
        f"{args.steps} timed steps after 1 warm-up; {args.threads} threads on {os.cpu_count()} CPU cores "
        f"({platform.processor() or platform.machine()}, {torch.backends.cpu.get_cpu_capability()}, native bf16: "
        f"{torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()}); each in its own process."
    )
    print(f"{'patch':<7} {'precision':<10} {'steps/s':>8} {'vs fp32':>8} {'s/step':>7} {'peak RSS MiB':>13}")
    for (edge, precision), r in results.items():
        ratio = r["steps_per_s"] / results[edge, "fp32"]["steps_per_s"]
        print(
            f"{edge}³{'':<4} {precision:<10} {r['steps_per_s']:>8.3f} {ratio:>7.2f}x {1 / r['steps_per_s']:>7.2f} "
            f"{r['peak_rss_mib']:>13.0f}"
        )


if __name__ == "__main__":
    main()
