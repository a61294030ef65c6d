"""GPU cost of training and inference with the bundle's network: fp32 against AMP (bf16, fp16), side by side.

For each precision, on one CUDA device, with the network, loss and sliding-window inferer built from
``configs/train.json`` by MONAI's ConfigParser (random weights, random inputs of the right sizes):

- a training step (forward, Dice+BCE loss, backward, gradient clipping, AdamW step) on ``--batch_size`` patches:
  median seconds, patches/s and peak GPU memory (``torch.cuda.max_memory_allocated``);
- sliding-window inference (train.json's ``validate#window_inferer``: window = patch size, 50 % overlap, gaussian
  blending, ``sw_batch_size`` windows at a time) of one ``--volume`` volume: median seconds per volume and peak memory.

Warm-up iterations run first (cuDNN picks its algorithms, the allocator fills); every timing is taken between
``torch.cuda.synchronize()`` calls. fp16 uses a GradScaler, as the bundle's ``"amp": true`` does (MONAI's trainer
autocasts to fp16 by default); bf16 needs none. fp32 convolutions run in TF32 unless ``--no_tf32``.

Run from the repository root on a GPU machine::

    python benchmarks/gpu_training.py                     # efficientnet-b7, 96^3 patches, batch 2, fp32/bf16/fp16
    python benchmarks/gpu_training.py --precisions bf16 fp16 --batch_size 4 --cudnn_benchmark
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

BUNDLE_ROOT = Path(__file__).resolve().parents[1] / "pvs_bundle"
sys.path.insert(0, str(BUNDLE_ROOT))  # the configs reach scripts/ as monai.bundle would: from the bundle root

from monai.bundle import ConfigParser  # noqa: E402

CONFIG = BUNDLE_ROOT / "configs" / "train.json"
DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
GIB = 1024**3
PVS_FRACTION = 0.002  # share of foreground voxels in the random label (PVS masks are very sparse)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", default="efficientnet-b7", help="encoder_name of the UNet++")
    parser.add_argument("--patch_size", type=int, nargs=3, default=[96, 96, 96], help="training patch and window")
    parser.add_argument("--batch_size", type=int, default=2, help="patches per training step")
    parser.add_argument("--volume", type=int, nargs=3, default=[208, 300, 320], help="volume for inference")
    parser.add_argument("--sw_batch_size", type=int, default=4, help="windows per sliding-window forward")
    parser.add_argument("--precisions", nargs="+", choices=list(DTYPES), default=list(DTYPES), help="first: baseline")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps first")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps (median reported)")
    parser.add_argument("--repeats", type=int, default=2, help="timed inferences after one warm-up (median)")
    parser.add_argument("--cudnn_benchmark", action="store_true", help="let cuDNN time its algorithms (not shipped)")
    parser.add_argument("--no_tf32", action="store_true", help="true fp32 convolutions and matmuls")
    return parser.parse_args()


def bundle_parts(args: argparse.Namespace) -> ConfigParser:
    """train.json with the benchmark's sizes (no pretrained weights)."""
    parser = ConfigParser()
    parser.read_config(str(CONFIG))
    parser.update(
        {
            "encoder_name": args.encoder,
            "encoder_weights": None,
            "patch_size": list(args.patch_size),
            "sw_batch_size": args.sw_batch_size,
        }
    )
    return parser


def timed(fn: Callable[[], object]) -> float:
    """Seconds that ``fn`` takes on the GPU, from a synchronised start to a synchronised end."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def reset_memory() -> None:
    """Free what earlier measurements left and restart the peak-memory counter."""
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()


def autocast(precision: str) -> torch.autocast:
    """CUDA autocast to ``precision`` (off for fp32)."""
    return torch.autocast("cuda", dtype=DTYPES[precision], enabled=DTYPES[precision] is not None)


def measure_training(args: argparse.Namespace, precision: str, device: torch.device) -> dict[str, float]:
    """Median training-step time, patches/s and peak memory of a fresh network in ``precision``."""
    reset_memory()
    torch.manual_seed(0)
    parser = bundle_parts(args)
    network = parser.get_parsed_content("network_def").to(device).train()
    loss_fn = parser.get_parsed_content("loss")
    optimizer = torch.optim.AdamW(network.parameters(), lr=parser["learning_rate"], weight_decay=parser["weight_decay"])
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    shape = (args.batch_size, 1, *args.patch_size)
    images = torch.rand(shape, device=device)
    labels = (torch.rand(shape, device=device) < PVS_FRACTION).float()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(precision):
            loss = loss_fn(network(images), labels)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(network.parameters(), parser["grad_clip_norm"])
        scaler.step(optimizer)
        scaler.update()

    for _ in range(args.warmup):
        step()
    step_s = statistics.median(timed(step) for _ in range(args.steps))
    return {
        "step_s": step_s,
        "patches_per_s": args.batch_size / step_s,
        "train_peak_gib": torch.cuda.max_memory_allocated(device) / GIB,
        "params_m": sum(p.numel() for p in network.parameters()) / 1e6,
    }


def measure_inference(args: argparse.Namespace, precision: str, device: torch.device) -> dict[str, float]:
    """Median sliding-window seconds per volume and peak memory of a fresh network in ``precision``."""
    reset_memory()
    parser = bundle_parts(args)
    network = parser.get_parsed_content("network_def").to(device).eval()
    inferer = parser.get_parsed_content("validate#window_inferer")
    volume = torch.rand((1, 1, *args.volume), device=device)

    def infer() -> None:
        with torch.inference_mode(), autocast(precision):
            inferer(volume, network)

    infer()
    infer_s = statistics.median(timed(infer) for _ in range(args.repeats))
    return {"infer_s": infer_s, "infer_peak_gib": torch.cuda.max_memory_allocated(device) / GIB}


def measure(args: argparse.Namespace, precision: str, device: torch.device) -> dict[str, float] | None:
    """Both measurements in ``precision``, or None when the GPU ran out of memory."""
    try:
        return {**measure_training(args, precision, device), **measure_inference(args, precision, device)}
    except torch.cuda.OutOfMemoryError:
        print(f"{precision}: out of GPU memory", flush=True)
        return None


def report(args: argparse.Namespace, results: dict[str, dict[str, float] | None], device: torch.device) -> None:
    """Print the device, the settings and every precision side by side, with ratios to the first."""
    props = torch.cuda.get_device_properties(device)
    params = next((r["params_m"] for r in results.values() if r), float("nan"))
    print(
        f"\ndevice: {props.name}, {props.total_memory / GIB:.0f} GiB; torch {torch.__version__}, CUDA "
        f"{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}; TF32 {'off' if args.no_tf32 else 'on'}, "
        f"cudnn.benchmark {'on' if args.cudnn_benchmark else 'off'}"
        f"\nnetwork: UNet++ {args.encoder}, {params:.1f} M parameters; patch {'x'.join(map(str, args.patch_size))}, "
        f"batch {args.batch_size}; inference of {'x'.join(map(str, args.volume))}, sw_batch_size {args.sw_batch_size}, "
        f"overlap 0.5, gaussian\n"
    )
    print("ratios: each precision's figure over the first's (a time under 1x is faster)\n")
    base_name = args.precisions[0]
    base = results[base_name]
    others = args.precisions[1:]
    header = f"{'':28}" + "".join(f"{p:>12}" for p in args.precisions)
    header += "".join(f"{p + '/' + base_name:>14}" for p in others)
    print(header)
    rows = [
        ("train step (s)", "step_s", "{:.3f}"),
        ("patches/s", "patches_per_s", "{:.2f}"),
        ("train peak memory (GiB)", "train_peak_gib", "{:.2f}"),
        ("inference (s/volume)", "infer_s", "{:.2f}"),
        ("inference peak memory (GiB)", "infer_peak_gib", "{:.2f}"),
    ]
    for label, key, fmt in rows:
        line = f"{label:28}" + "".join(
            f"{fmt.format(results[p][key]) if results[p] else 'OOM':>12}" for p in args.precisions
        )
        for p in others:
            ratio = f"{results[p][key] / base[key]:.2f}x" if results[p] and base else "-"
            line += f"{ratio:>14}"
        print(line)


def main() -> None:
    args = parse_args()
    if not torch.cuda.is_available():
        sys.exit(
            "benchmarks/gpu_training.py measures GPU training and needs a CUDA device, but torch.cuda.is_available() "
            "is False here. Run it on a GPU machine; for CPU figures see benchmarks/data_pipeline.py and "
            "benchmarks/inference_runtime.py."
        )
    if "bf16" in args.precisions and not torch.cuda.is_bf16_supported():
        sys.exit("bf16 is not supported on this GPU: pass --precisions fp32 fp16.")
    device = torch.device("cuda", torch.cuda.current_device())
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    torch.backends.cudnn.allow_tf32 = not args.no_tf32
    torch.backends.cuda.matmul.allow_tf32 = not args.no_tf32
    results = {}
    for precision in args.precisions:
        print(f"measuring {precision} ...", flush=True)
        results[precision] = measure(args, precision, device)
    report(args, results, device)


if __name__ == "__main__":
    main()
