"""CPU inference time per volume: eager PyTorch vs TorchScript vs ONNX Runtime, side by side, in one run.

The network, the sliding-window inferer (window = patch_size, 50 % overlap, gaussian blending) and the exports
are the bundle's own: ``configs/inference.json`` builds them, and the TorchScript and ONNX models are written by
MONAI's ``ckpt_export`` and ``onnx_export`` (the functions behind ``python -m monai.bundle ckpt_export`` and
``onnx_export``) from a checkpoint of random weights. What is timed is the sliding-window inference of one
volume already on the network's grid (0.8 mm); loading, resampling, inverting and writing are not. Each backend
loads its model and runs in a fresh child process, so its peak resident memory (``VmHWM``: the model, the volume,
the blended output and the runtime's buffers) is its own.

Run from the repository root::

    python benchmarks/inference_runtime.py                                   # efficientnet-b0, 96 x 128 x 112
    python benchmarks/inference_runtime.py --encoder efficientnet-b7 --shape 208 300 320   # a full HCP-A volume
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

BUNDLE_ROOT = Path(__file__).resolve().parents[1] / "pvs_bundle"
sys.path.insert(0, str(BUNDLE_ROOT))  # the configs reach scripts/ as monai.bundle would: from the bundle root

from monai.bundle import ConfigParser, ckpt_export, onnx_export  # noqa: E402

from scripts.model.onnx_network import OnnxRuntimeNetwork  # noqa: E402

CONFIG = BUNDLE_ROOT / "configs" / "inference.json"
BACKENDS = ("eager", "torchscript", "onnxruntime")
META = BUNDLE_ROOT / "configs" / "metadata.json"
ONNX_CONVERTER_KWARGS = {
    "dynamo": False,
    "opset_version": 18,
    "input_names": ["image"],
    "output_names": ["pred"],
    "dynamic_axes": {"image": {0: "batch", 2: "x", 3: "y", 4: "z"}, "pred": {0: "batch", 2: "x", 3: "y", 4: "z"}},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", default="efficientnet-b0", help="encoder_name of the UNet++")
    parser.add_argument("--shape", type=int, nargs=3, default=[96, 128, 112], help="volume size on the 0.8 mm grid")
    parser.add_argument("--patch_size", type=int, nargs=3, default=[96, 96, 96], help="sliding window")
    parser.add_argument("--sw_batch_size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per backend (the median is reported)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads for every backend")
    parser.add_argument("--backend", choices=BACKENDS, help=argparse.SUPPRESS)  # set in the child processes
    parser.add_argument("--model_dir", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def overrides(args: argparse.Namespace) -> dict:
    """The inference.json settings the benchmark changes."""
    return {
        "encoder_name": args.encoder,
        "encoder_weights": None,
        "patch_size": list(args.patch_size),
        "sw_batch_size": args.sw_batch_size,
    }


def export(args: argparse.Namespace, folder: Path) -> dict[str, float]:
    """Build the network with random weights, save it, export it both ways with the bundle commands; return seconds."""
    parser = ConfigParser()
    parser.read_config(str(CONFIG))
    parser.update(overrides(args))
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def").eval()
    ckpt, ts_file, onnx_file = folder / "model.pt", folder / "model.ts", folder / "model.onnx"
    torch.save(network.state_dict(), ckpt)
    common = {
        "net_id": "network_def",
        "ckpt_file": str(ckpt),
        "meta_file": str(META),
        "config_file": str(CONFIG),
        "input_shape": [1, 1, *args.patch_size],
        "use_trace": True,
        **overrides(args),
    }
    seconds = {}
    start = time.perf_counter()
    ckpt_export(filepath=str(ts_file), **common)
    seconds["torchscript"] = time.perf_counter() - start
    start = time.perf_counter()
    onnx_export(filepath=str(onnx_file), converter_kwargs=ONNX_CONVERTER_KWARGS, **common)
    seconds["onnxruntime"] = time.perf_counter() - start
    return seconds


def load_backend(args: argparse.Namespace, folder: Path) -> torch.nn.Module:
    """The network as the backend runs it: the eager module with the saved weights, or an exported file."""
    if args.backend == "torchscript":
        return torch.jit.load(str(folder / "model.ts"), map_location="cpu").eval()
    if args.backend == "onnxruntime":
        return OnnxRuntimeNetwork(folder / "model.onnx", num_threads=args.threads)
    parser = ConfigParser()
    parser.read_config(str(CONFIG))
    parser.update(overrides(args))
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
    return network.eval()


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (``VmHWM``, which starts afresh at exec), in MiB."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


def measure(args: argparse.Namespace) -> None:
    """In a child process: median seconds of a sliding-window inference of the volume, after one warm-up window.

    Writes the figures to ``<backend>.json`` and the logits to ``<backend>.npy`` in the model folder.
    """
    torch.set_num_threads(args.threads)
    folder = Path(args.model_dir)
    parser = ConfigParser()
    parser.read_config(str(CONFIG))
    parser.update(overrides(args))
    inferer = parser.get_parsed_content("inferer")
    network = load_backend(args, folder)
    volume = torch.rand(1, 1, *args.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        network(volume[..., : inferer.roi_size[0], : inferer.roi_size[1], : inferer.roi_size[2]])
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            out = inferer(volume, network)
            times.append(time.perf_counter() - start)
    np.save(folder / f"{args.backend}.npy", out.numpy())
    result = {"seconds": statistics.median(times), "peak_rss_mib": peak_rss_mib()}
    (folder / f"{args.backend}.json").write_text(json.dumps(result))


def run_child(backend: str, folder: Path) -> dict[str, float]:
    """Measure one backend in a fresh interpreter and return its figures."""
    command = [sys.executable, __file__, *sys.argv[1:], "--backend", backend, "--model_dir", str(folder)]
    subprocess.run(command, check=True)
    return json.loads((folder / f"{backend}.json").read_text())


def main() -> None:
    args = parse_args()
    if args.backend is not None:
        measure(args)
        return
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        export_seconds = export(args, folder)
        results = {}
        for backend in BACKENDS:
            results[backend] = run_child(backend, folder)
            print(f"{backend}: {results[backend]['seconds']:.1f} s", flush=True)
        eager_out = np.load(folder / "eager.npy")
        for backend in BACKENDS:
            results[backend]["max_diff"] = float(np.abs(np.load(folder / f"{backend}.npy") - eager_out).max())
    eager_seconds = results["eager"]["seconds"]
    steps = [max(1, -(-(s - p) // (p // 2)) + 1) for s, p in zip(args.shape, args.patch_size, strict=True)]
    windows = int(np.prod(steps))
    print(
        f"\nUNet++ {args.encoder}, volume {args.shape} (0.8 mm grid), window {args.patch_size}, 50 % overlap: "
        f"{windows} windows, sw_batch_size {args.sw_batch_size}; {args.threads} threads on "
        f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}); median of {args.repeats}; "
        "each backend in its own process."
    )
    print(
        f"{'backend':<12} {'s/volume':>9} {'vs eager':>9} {'peak RSS MiB':>13} {'vs eager':>9} "
        f"{'max |logit - eager|':>20} {'export s':>9}"
    )
    for name, result in results.items():
        exported = f"{export_seconds[name]:.1f}" if name in export_seconds else "-"
        print(
            f"{name:<12} {result['seconds']:>9.2f} {result['seconds'] / eager_seconds:>8.2f}x "
            f"{result['peak_rss_mib']:>13.0f} {result['peak_rss_mib'] / results['eager']['peak_rss_mib']:>8.2f}x "
            f"{result['max_diff']:>20.2e} {exported:>9}"
        )


if __name__ == "__main__":
    main()
