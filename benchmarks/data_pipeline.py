"""Training data pipeline: the bundle's cached pipeline against one that reloads every volume every epoch, in one run.

Both pipelines are built from ``configs/train.json`` with MONAI's ConfigParser, so what is measured is what ships:

- **bundle**: ``train#dataloader`` as configured, a ``CacheDataset`` that runs the deterministic preprocessing
  (load, channel first, binarise, RAS, resample to ``pixdim``, percentile scaling, head crop) once, then only the
  random transforms (pad, positive/negative crops, affine, elastic, flips, bias field, contrast, noise) each epoch;
- **bundle, disk**: the same loader with ``--cache_rate 0 --cache_dir``: nothing in RAM, every case read each
  epoch from the disk cache of preprocessed volumes (filled once, before the epochs, and timed as the cache fill);
- **original**: the same ``train#preprocessing`` (deterministic + random transforms) in a plain ``Dataset``, so every
  volume is read, decompressed, reoriented, resampled and scaled again every epoch, as the seed script did.

Each pipeline feeds the same fixed model step (by default a 1x1x1 convolution, so that the step costs little more
than the loss and the data pipeline dominates; ``--model unetplusplus`` uses the bundle's network) and runs in its
own child process, so its peak resident memory (the process's ``VmHWM``; with ``--num_workers``, also its largest
DataLoader worker's ``getrusage``) is its own. Volumes are synthetic int16 NIfTI (a noisy head with bright tubes as
PVS) written to a temporary folder at the voxel size of ds005595's headers.

Run from the repository root::

    python benchmarks/data_pipeline.py        # 8 volumes of 160 x 192 x 160, patch 96^3, 2 epochs: ~3 min on 2 cores
    python benchmarks/data_pipeline.py --n_volumes 32 --shape 208 300 320 --epochs 5 --num_workers 8   # full size
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

BUNDLE_ROOT = Path(__file__).resolve().parents[1] / "pvs_bundle"
sys.path.insert(0, str(BUNDLE_ROOT))  # the configs reach scripts/ as monai.bundle would: from the bundle root

from monai.bundle import ConfigParser  # noqa: E402
from monai.data import DataLoader, Dataset  # noqa: E402

from scripts.data.demo.grid import VOXEL_SIZE_MM  # noqa: E402

CONFIG = BUNDLE_ROOT / "configs" / "train.json"
PIPELINES = ("original", "bundle", "bundle_disk")
TITLES = {"original": "original (Dataset)", "bundle": "bundle (RAM cache)", "bundle_disk": "bundle (disk cache)"}
GOAL_SPEEDUP = 3.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n_volumes", type=int, default=8, help="training volumes")
    parser.add_argument("--shape", type=int, nargs=3, default=[160, 192, 160], help="volume size (208 300 320: full)")
    parser.add_argument("--patch_size", type=int, nargs=3, default=[96, 96, 96], help="train.json patch_size")
    parser.add_argument("--num_samples", type=int, default=4, help="patches cropped from each volume")
    parser.add_argument("--batch_size", type=int, default=2, help="volumes per batch (x num_samples patches)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--num_workers", type=int, default=0, help="DataLoader and cache-filling workers")
    parser.add_argument("--pixdim", type=float, nargs=3, default=[0.8, 0.8, 0.8], help="train.json pixdim")
    parser.add_argument("--model", choices=("tiny", "unetplusplus"), default="tiny", help="the fixed model step")
    parser.add_argument("--encoder", default="efficientnet-b0", help="encoder of --model unetplusplus")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pipeline", choices=PIPELINES, help=argparse.SUPPRESS)  # set in the child processes
    parser.add_argument("--data_dir", help=argparse.SUPPRESS)
    parser.add_argument("--result_file", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def synthetic_volume(shape: tuple[int, ...], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A noisy ellipsoidal head on a dark background, with bright tubes (the PVS) and their mask, as int16."""
    axes = [np.linspace(-1.0, 1.0, s, dtype=np.float32) for s in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    head = (x / 0.85) ** 2 + (y / 0.9) ** 2 + (z / 0.85) ** 2 < 1.0
    image = np.where(head, 300.0, 10.0).astype(np.float32)
    image += rng.normal(0.0, 25.0, shape).astype(np.float32)
    mask = np.zeros(shape, dtype=np.int16)
    for _ in range(60):
        cx, cy = (int(rng.integers(s // 4, 3 * s // 4)) for s in shape[:2])
        z0 = int(rng.integers(shape[2] // 4, shape[2] // 2))
        mask[cx : cx + 2, cy : cy + 2, z0 : z0 + int(rng.integers(5, 20))] = 1
    mask *= head
    image[mask > 0] = 900.0
    return np.clip(image, 0, None).astype(np.int16), mask


def write_volumes(folder: Path, n_volumes: int, shape: list[int], seed: int) -> list[dict[str, str]]:
    """Write ``n_volumes`` image/mask pairs as .nii.gz and return their datalist entries."""
    affine = np.diag([*VOXEL_SIZE_MM, 1.0])
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n_volumes):
        image, mask = synthetic_volume(tuple(shape), rng)
        paths = {"image": folder / f"sub-{i:03d}_T2w.nii.gz", "label": folder / f"sub-{i:03d}_desc-mask_PVS.nii.gz"}
        nib.save(nib.Nifti1Image(image, affine), str(paths["image"]))
        nib.save(nib.Nifti1Image(mask, affine), str(paths["label"]))
        cases.append({key: str(path) for key, path in paths.items()})
    return cases


def config(args: argparse.Namespace, cases: list[dict[str, str]]) -> ConfigParser:
    """train.json with the benchmark's sizes, ``cases`` as the training split, and the pipeline's cache."""
    parser = ConfigParser()
    parser.read_config(str(CONFIG))
    parser.update(
        {
            "datalist": {"training": cases, "validation": [], "test": []},
            "patch_size": list(args.patch_size),
            "num_samples": args.num_samples,
            "batch_size": args.batch_size,
            "num_workers": args.num_workers,
            "pixdim": list(args.pixdim),
            "cache_rate": 1.0,
            "encoder_name": args.encoder,
            "encoder_weights": None,
        }
    )
    if args.pipeline == "bundle_disk":
        parser.update({"cache_rate": 0.0, "cache_dir": str(Path(args.data_dir) / "cache")})
    return parser


def build_loader(pipeline: str, parser: ConfigParser, args: argparse.Namespace) -> DataLoader:
    """The bundle's own ``train#dataloader`` (its disk cache filled first), or its transforms in a plain Dataset."""
    if pipeline == "bundle_disk":
        parser.get_parsed_content("train#dataset").fill_disk_cache()
    if pipeline in ("bundle", "bundle_disk"):
        return parser.get_parsed_content("train#dataloader")
    dataset = Dataset(
        parser.get_parsed_content("datalist")["training"], parser.get_parsed_content("train#preprocessing")
    )
    return DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.num_workers)


def build_model(parser: ConfigParser, args: argparse.Namespace) -> torch.nn.Module:
    """The fixed model trained on every batch: a 1x1x1 convolution, or the bundle's UNet++."""
    if args.model == "unetplusplus":
        return parser.get_parsed_content("network_def")
    return torch.nn.Conv3d(1, 1, kernel_size=1)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (``VmHWM``, which starts afresh at exec), in MiB."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


def worker_peak_rss_mib() -> float:
    """Peak resident memory of the largest finished DataLoader worker (pages shared with this process included)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def measure(args: argparse.Namespace) -> dict[str, float]:
    """Build one pipeline, train the fixed model for ``args.epochs`` epochs, and return its figures."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    imports_rss_mib = peak_rss_mib()
    cases = json.loads((Path(args.data_dir) / "datalist.json").read_text())
    parser = config(args, cases)
    model = build_model(parser, args)
    loss_fn = parser.get_parsed_content("loss")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    loader = build_loader(args.pipeline, parser, args)  # the CacheDataset is filled here
    build_s = time.perf_counter() - start
    patches, step_s, epoch_s = 0, 0.0, []
    for _ in range(args.epochs):
        epoch_start = time.perf_counter()
        for batch in loader:
            step_start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(batch["image"].as_tensor()), batch["label"].as_tensor())
            loss.backward()
            optimizer.step()
            step_s += time.perf_counter() - step_start
            patches += batch["image"].shape[0]
        epoch_s.append(time.perf_counter() - epoch_start)
    total_s = sum(epoch_s)
    return {
        "build_s": build_s,
        "epoch_s": total_s / args.epochs,
        "data_s": (total_s - step_s) / args.epochs,
        "step_s": step_s / args.epochs,
        "patches": patches,
        "patches_per_s": patches / total_s,
        "data_patches_per_s": patches / (total_s - step_s),
        "patches_per_s_with_build": patches / (total_s + build_s),
        "imports_rss_mib": imports_rss_mib,
        "peak_rss_mib": peak_rss_mib(),
        "worker_peak_rss_mib": worker_peak_rss_mib() if args.num_workers else 0.0,
    }


def run_child(pipeline: str, data_dir: Path, argv: list[str]) -> dict[str, float]:
    """Measure one pipeline in a fresh interpreter and return its figures."""
    result_file = data_dir / f"{pipeline}.json"
    command = [sys.executable, __file__, *argv, "--pipeline", pipeline, "--data_dir", str(data_dir)]
    subprocess.run([*command, "--result_file", str(result_file)], check=True)
    return json.loads(result_file.read_text())


def report(args: argparse.Namespace, results: dict[str, dict[str, float]]) -> None:
    """Print the machine, the settings and the pipelines side by side with their ratios to the original."""
    original = results["original"]
    print(
        f"\nmachine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__} ({args.threads} threads)"
        f"\ndata: {args.n_volumes} volumes {'x'.join(map(str, args.shape))} int16 .nii.gz at "
        f"{'x'.join(f'{v:g}' for v in VOXEL_SIZE_MM)} mm -> pixdim {'x'.join(f'{v:g}' for v in args.pixdim)}; "
        f"patch {'x'.join(map(str, args.patch_size))}, {args.num_samples} patches/volume, batch {args.batch_size} "
        f"volumes, {args.epochs} epochs, {args.num_workers} workers, model {args.model}\n"
    )
    rows = [
        ("cache fill, once (s)", "build_s", "{:.1f}"),
        ("epoch (s)", "epoch_s", "{:.2f}"),
        ("  data (s/epoch)", "data_s", "{:.2f}"),
        ("  model step (s/epoch)", "step_s", "{:.2f}"),
        ("patches/s, data only", "data_patches_per_s", "{:.2f}"),
        ("patches/s, epochs", "patches_per_s", "{:.2f}"),
        ("patches/s, with cache fill", "patches_per_s_with_build", "{:.2f}"),
        ("RSS after imports (MiB)", "imports_rss_mib", "{:.0f}"),
        ("peak RSS (MiB)", "peak_rss_mib", "{:.0f}"),
    ]
    if args.num_workers:
        rows.append(("peak RSS, largest worker (MiB)", "worker_peak_rss_mib", "{:.0f}"))
    print("each bundle figure is followed by its ratio to the original's (a time under 1x is faster)\n")
    header = f"{'':30}{TITLES['original']:>20}"
    for pipeline in PIPELINES[1:]:
        header += f"{TITLES[pipeline]:>22}{'/original':>11}"
    print(header)
    for label, key, fmt in rows:
        line = f"{label:30}{fmt.format(original[key]):>20}"
        for pipeline in PIPELINES[1:]:
            value = results[pipeline][key]
            ratio = f"{value / original[key]:.2f}x" if key != "build_s" and original[key] else "-"
            line += f"{fmt.format(value):>22}{ratio:>11}"
        print(line)
    for pipeline in PIPELINES[1:]:
        speedup = results[pipeline]["data_patches_per_s"] / original["data_patches_per_s"]
        verdict = "met" if speedup >= GOAL_SPEEDUP else "not met"
        print(
            f"\ngoal: {TITLES[pipeline]} >= {GOAL_SPEEDUP:g}x the original's patches/s, data only (what bounds "
            f"training when DataLoader workers feed a GPU): {speedup:.2f}x, {verdict}"
        )


def main() -> None:
    args = parse_args()
    if args.pipeline is not None:
        Path(args.result_file).write_text(json.dumps(measure(args)))
        return
    with tempfile.TemporaryDirectory(prefix="pvs_data_pipeline_") as folder:
        data_dir = Path(folder)
        start = time.perf_counter()
        cases = write_volumes(data_dir, args.n_volumes, args.shape, args.seed)
        (data_dir / "datalist.json").write_text(json.dumps(cases))
        print(f"wrote {args.n_volumes} volumes in {time.perf_counter() - start:.1f} s", flush=True)
        results = {pipeline: run_child(pipeline, data_dir, sys.argv[1:]) for pipeline in PIPELINES}
    report(args, results)


if __name__ == "__main__":
    main()
