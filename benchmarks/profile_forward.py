"""Where the CPU time of inference goes: a torch.profiler breakdown of the network on one batch of windows.

Runs the UNet++ of ``configs/inference.json`` (``--encoder``, ``--norm``, random weights: the time does not depend on
them) in fp32 eager (or under bf16 CPU autocast, ``--precision bf16``; channels-last memory with ``--channels_last``) on
``--sw_batch_size`` windows of ``--window`` voxels, as the sliding window feeds it, and
prints: the operators by self CPU time with their share, the floating-point work of the convolutions (the
count of multiply-adds), the rate this CPU reached on them, and what that rate implies for a whole volume of
``--windows`` windows (the count ``benchmarks/inference_runtime.py`` reports for the full-size head) — the floor
that faster kernels, not fewer Python steps, would have to lower.

Run from the repository root::

    python benchmarks/profile_forward.py --encoder efficientnet-b0 --norm group
    python benchmarks/profile_forward.py --encoder efficientnet-b7 --norm batch
    python benchmarks/profile_forward.py --precision bf16          # where the CPU has AMX or AVX512-BF16
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

BUNDLE_ROOT = Path(__file__).resolve().parents[1] / "pvs_bundle"
sys.path.insert(0, str(BUNDLE_ROOT))

from scripts.cpu import available_cores  # noqa: E402
from scripts.model.network import build_unetplusplus  # noqa: E402


def convolution_flops(network: torch.nn.Module, batch: torch.Tensor) -> float:
    """Floating-point operations of the network's 3D convolutions on ``batch`` (2 per multiply-add).

    Counted from each convolution's output size, kernel and input channels per group, with forward hooks (the
    profiler's own FLOP counter does not cover 3D convolutions).
    """
    total = 0.0

    def count(module: torch.nn.Conv3d, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1] * module.kernel_size[2]
        total += 2.0 * output.numel() * (module.in_channels // module.groups) * kernel

    hooks = [m.register_forward_hook(count) for m in network.modules() if isinstance(m, torch.nn.Conv3d)]
    try:
        network(batch)
    finally:
        for hook in hooks:
            hook.remove()
    return total


def main() -> None:
    """Profile one forward pass and print the breakdown."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", default="efficientnet-b0")
    parser.add_argument("--norm", default="group", choices=["batch", "group", "instance"])
    parser.add_argument("--window", type=int, default=96, help="window edge in voxels (a multiple of 32)")
    parser.add_argument("--sw_batch_size", type=int, default=4)
    parser.add_argument("--windows", type=int, default=144, help="windows per volume, for the per-volume floor")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="bf16: CPU autocast")
    parser.add_argument("--channels_last", action="store_true", help="network and input in channels-last 3D memory")
    args = parser.parse_args()

    torch.set_num_threads(available_cores())
    network = build_unetplusplus(
        encoder_name=args.encoder, encoder_weights=None, patch_size=[args.window] * 3, norm=args.norm
    ).eval()
    batch = torch.rand(args.sw_batch_size, 1, args.window, args.window, args.window)
    if args.channels_last:
        network = network.to(memory_format=torch.channels_last_3d)
        batch = batch.contiguous(memory_format=torch.channels_last_3d)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16")
    with torch.inference_mode(), autocast:
        network(batch[:1])  # warm-up: oneDNN primitive creation
        start = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            network(batch)
        wall = time.perf_counter() - start
        conv_flops = convolution_flops(network, batch)

    self_us: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        self_us[event.key] += event.self_cpu_time_total
    total_us = sum(self_us.values())
    conv_us = sum(t for k, t in self_us.items() if "conv" in k.lower())

    print(f"# {platform.processor() or platform.machine()}, {available_cores()} cores, torch {torch.__version__}")
    layout = f"{args.precision} eager" + (", channels-last" if args.channels_last else "")
    print(f"# {args.encoder} / {args.norm}: {args.sw_batch_size} windows of {args.window}³, {layout}")
    print(f"forward wall time: {wall:.2f} s ({wall / args.sw_batch_size:.2f} s per window; profiler on)")
    print(f"\n{'operator':<40} {'self CPU s':>10} {'share':>7}")
    for name in sorted(self_us, key=self_us.get, reverse=True)[: args.top]:
        print(f"{name:<40} {self_us[name] / 1e6:>10.2f} {self_us[name] / total_us:>7.1%}")
    rate = conv_flops / (conv_us / 1e6) if conv_us else float("nan")
    conv_share = conv_us / total_us
    print(f"\nconvolutions: {conv_share:.1%} of the CPU time, {conv_flops / 1e9:.0f} GFLOP, {rate / 1e9:.1f} GFLOP/s")
    per_window = wall / args.sw_batch_size
    conv_floor = conv_flops / args.sw_batch_size / rate * args.windows if conv_us else float("nan")
    print(
        f"per volume of {args.windows} windows: {per_window * args.windows:.0f} s at this forward rate; "
        f"the convolutions alone {conv_floor:.0f} s at {rate / 1e9:.1f} GFLOP/s"
    )


if __name__ == "__main__":
    main()
