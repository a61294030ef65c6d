"""CPU inference time per volume for every inference path, side by side against fp32 eager, in one run.

Paths: fp32 eager on every window (the reference), then with windows without head skipped
(``HeadSlidingWindowInferer``, the default): fp32 eager, bf16 eager (CPU autocast, forced even where the CPU has no
native bfloat16, to measure it), TorchScript (``ckpt_export --use_trace``), ONNX Runtime (``onnx_export``; graph
optimisation ``all`` and ``basic``) and OpenVINO (reading the same ONNX file; ``auto`` precision, bf16 on a CPU with
native bfloat16, as ``configs/inference_openvino.json`` runs it, and fp32). The network, preprocessing and
sliding-window inferer (window = ``--patch_size``, ``--overlap``, gaussian blending) are ``configs/inference.json``'s.

The volume is a demo subject (``scripts/data/demo/``, a head with skull and scalp) at ``--shape``,
optionally padded with ``--pad`` voxels of zeros on every side like a real scan's field of view, then preprocessed
as inference does (resampling, normalisation, head crop). The weights are ``--model_file`` (the demo model:
``--encoder efficientnet-b0 --norm group``) or random. What is timed is the sliding-window inference of the
preprocessed volume; loading, inverting and writing are not. Each path loads its model and runs in a fresh child
process, so its peak resident memory (``VmHWM``) is its own. Each path's mask (logit > 0) is compared with the
reference's: voxel Dice and PVS count (meaningful with trained weights).

Run from the repository root::

    python benchmarks/inference_runtime.py --encoder efficientnet-b0 --norm group \
        --model_file pvs_bundle/models/demo/model.pt                              # full size, 208 x 300 x 320
    python benchmarks/inference_runtime.py --encoder efficientnet-b7 --paths "eager fp32" "eager fp32 skip"
    python benchmarks/inference_runtime.py --norm group --decoder_channels 128 64 32 16 8 \
        --model_file pvs_bundle/models/model.pt --patch_size 64 64 64 --overlap 0.25   # the shipped model
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
from monai.transforms import Compose  # noqa: E402

from scripts.cpu import available_cores  # noqa: E402
from scripts.data.demo import generate_dataset  # noqa: E402
from scripts.evaluation.path_agreement import mask_agreement  # noqa: E402
from scripts.model.precision import autocast_network  # noqa: E402

CONFIG = BUNDLE_ROOT / "configs" / "inference.json"
META = BUNDLE_ROOT / "configs" / "metadata.json"
# name: (backend, precision, skip windows without head)
PATHS = {
    "eager fp32": ("eager", "fp32", False),
    "eager fp32 skip": ("eager", "fp32", True),
    "eager bf16 skip": ("eager", "bf16", True),
    "torchscript skip": ("torchscript", "fp32", True),
    "onnxruntime skip": ("onnxruntime", "fp32", True),
    "onnxruntime-basic skip": ("onnxruntime-basic", "fp32", True),
    "openvino skip": ("openvino", "auto", True),
    "openvino fp32 skip": ("openvino", "fp32", True),
}
REFERENCE = "eager fp32"
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
    parser.add_argument("--norm", default="batch", choices=("batch", "group"), help="the network's norm layers")
    parser.add_argument("--model_file", help="trained weights (a state dict); random weights when absent")
    parser.add_argument("--shape", type=int, nargs=3, default=[208, 300, 320], help="demo volume, 0.8 mm voxels")
    parser.add_argument("--pad", type=int, default=0, help="zero voxels added on every side (a larger FOV)")
    parser.add_argument("--patch_size", type=int, nargs=3, default=[96, 96, 96], help="sliding window")
    parser.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap")
    parser.add_argument("--sw_batch_size", type=int, default=4)
    parser.add_argument(
        "--decoder_channels", type=int, nargs=5, help="the UNet++ decoder's widths (default: inference.json's)"
    )
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS), help="paths to time")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per path (the median is reported)")
    parser.add_argument("--threads", type=int, default=available_cores(), help="CPU threads for every path")
    parser.add_argument("--path", choices=list(PATHS), help=argparse.SUPPRESS)  # set in the child processes
    parser.add_argument("--work_dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if REFERENCE not in args.paths:
        args.paths.insert(0, REFERENCE)
    return args


def overrides(args: argparse.Namespace) -> dict:
    """The inference.json settings the benchmark changes."""
    return {
        "encoder_name": args.encoder,
        "encoder_weights": None,
        "norm": args.norm,
        "patch_size": list(args.patch_size),
        "sw_overlap": args.overlap,
        "sw_batch_size": args.sw_batch_size,
    } | ({"decoder_channels": list(args.decoder_channels)} if args.decoder_channels else {})


def bundle_parser(args: argparse.Namespace) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(CONFIG))
    parser.update(overrides(args))
    return parser


def prepare(args: argparse.Namespace, folder: Path) -> dict[str, float]:
    """Write the preprocessed volume, the weights and the exports into ``folder``; return export seconds."""
    dataset = generate_dataset(folder / "demo", n_subjects=1, shape=args.shape, seed=0)
    image = next(dataset.glob("sub-*/anat/*_T2w.nii.gz"))
    parser = bundle_parser(args)
    x = Compose(parser.get_parsed_content("preprocessing_transforms"))({"image": str(image)})["image"]
    if args.pad:
        import nibabel as nib

        nii = nib.load(str(image))
        padded = np.pad(np.asarray(nii.dataobj), args.pad)
        image = folder / "padded_T2w.nii.gz"
        nib.save(nib.Nifti1Image(padded, nii.affine), str(image))
        x = Compose(parser.get_parsed_content("preprocessing_transforms"))({"image": str(image)})["image"]
    np.save(folder / "volume.npy", x.as_tensor()[None].numpy())
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def").eval()
    if args.model_file:
        network.load_state_dict(torch.load(args.model_file, map_location="cpu", weights_only=True))
    ckpt = folder / "model.pt"
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
    backends = {PATHS[p][0] for p in args.paths}
    seconds = {}
    if "torchscript" in backends:
        start = time.perf_counter()
        ckpt_export(filepath=str(folder / "model.ts"), **common)
        seconds["torchscript"] = time.perf_counter() - start
    if backends & {"onnxruntime", "onnxruntime-basic", "openvino"}:
        start = time.perf_counter()
        onnx_export(filepath=str(folder / "model.onnx"), converter_kwargs=ONNX_CONVERTER_KWARGS, **common)
        seconds["onnx"] = time.perf_counter() - start
    return seconds


def load_backend(args: argparse.Namespace, backend: str, folder: Path, precision: str = "fp32") -> torch.nn.Module:
    """The network as the backend runs it: the eager module with the saved weights, or an exported file."""
    if backend == "torchscript":
        return torch.jit.load(str(folder / "model.ts"), map_location="cpu").eval()
    if backend.startswith("onnxruntime"):
        from scripts.model.onnx_network import OnnxRuntimeNetwork

        level = "basic" if backend == "onnxruntime-basic" else "all"
        return OnnxRuntimeNetwork(folder / "model.onnx", num_threads=args.threads, graph_optimization_level=level)
    if backend == "openvino":
        from scripts.model.openvino_network import OpenVinoNetwork

        return OpenVinoNetwork(folder / "model.onnx", num_threads=args.threads, precision=precision)
    network = bundle_parser(args).get_parsed_content("network_def")
    network.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
    return network.eval()


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (``VmHWM``, which starts afresh at exec), in MiB."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


def measure(args: argparse.Namespace) -> None:
    """In a child process: median seconds of one path's sliding-window inference, after one warm-up window.

    Writes the figures to ``<path>.json`` and the mask to ``<path>.npy`` in the work folder.
    """
    torch.set_num_threads(args.threads)
    folder = Path(args.work_dir)
    backend, precision, skip = PATHS[args.path]
    parser = bundle_parser(args)
    parser.update({"skip_background_windows": skip})
    inferer = parser.get_parsed_content("inferer")
    network = load_backend(args, backend, folder, precision)
    predictor = autocast_network(network, torch.bfloat16) if precision == "bf16" else network
    volume = torch.from_numpy(np.load(folder / "volume.npy"))
    with torch.no_grad():
        predictor(torch.zeros(1, 1, *args.patch_size))
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            out = inferer(volume, predictor)
            times.append(time.perf_counter() - start)
    np.save(folder / f"{args.path}.npy", (out[0, 0] > 0).numpy())
    result = {
        "seconds": statistics.median(times),
        "peak_rss_mib": peak_rss_mib(),
        "windows_run": inferer.windows_run,
        "windows": inferer.windows_run + inferer.windows_skipped,
    }
    (folder / f"{args.path}.json").write_text(json.dumps(result))


def run_child(path: str, folder: Path) -> dict[str, float]:
    """Measure one path in a fresh interpreter and return its figures."""
    command = [sys.executable, __file__, *sys.argv[1:], "--path", path, "--work_dir", str(folder)]
    subprocess.run(command, check=True)
    return json.loads((folder / f"{path}.json").read_text())


def main() -> None:
    args = parse_args()
    if args.path is not None:
        measure(args)
        return
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        export_seconds = prepare(args, folder)
        grid = np.load(folder / "volume.npy", mmap_mode="r").shape[2:]
        results = {}
        for path in args.paths:
            results[path] = run_child(path, folder)
            print(f"{path}: {results[path]['seconds']:.1f} s", flush=True)
        reference = np.load(folder / f"{REFERENCE}.npy")
        for path in args.paths:
            results[path].update(mask_agreement(reference, np.load(folder / f"{path}.npy")))
    base = results[REFERENCE]
    print(
        f"\nUNet++ {args.encoder} ({args.norm} norm, {'weights ' + args.model_file if args.model_file else 'random'}"
        f"), demo volume {args.shape} padded by {args.pad} -> {list(grid)} after preprocessing (0.8 mm, head crop); "
        f"window {args.patch_size}, overlap {args.overlap}, sw_batch_size {args.sw_batch_size}; "
        f"{args.threads} threads on {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}, "
        f"{torch.backends.cpu.get_cpu_capability()}); median of {args.repeats}; each path in its own process. "
        f"Exports: {', '.join(f'{k} {v:.0f} s' for k, v in export_seconds.items()) or 'none'}."
    )
    print(
        f"{'path':<24} {'windows':>9} {'s/volume':>9} {'speed-up':>9} {'peak RSS MiB':>13} {'vs ref':>7} "
        f"{'Dice vs ref':>11} {'PVS count':>10} {'count change':>13}"
    )
    for name, r in results.items():
        print(
            f"{name:<24} {r['windows_run']:>4}/{r['windows']:<4} {r['seconds']:>9.1f} "
            f"{base['seconds'] / r['seconds']:>8.2f}x {r['peak_rss_mib']:>13.0f} "
            f"{r['peak_rss_mib'] / base['peak_rss_mib']:>6.2f}x {r['dice']:>11.4f} {r['count_other']:>10} "
            f"{100 * r['count_change']:>12.2f}%"
        )


if __name__ == "__main__":
    main()
