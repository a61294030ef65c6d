"""Whole ``run inferring`` commands on one full-size volume, side by side: wall seconds and mask agreement.

What a user waits for: process start, config parsing, model load, reading, preprocessing, sliding-window
inference, inversion to the scan's grid, writing the mask and the tables. Each variant is one
``python -m monai.bundle run inferring`` from ``pvs_bundle/`` on the same volume, run alone, ``--repeats`` times
(the median is reported); an ONNX export that a variant needs is timed apart (once). Masks are compared with the
first variant's (voxel Dice, PVS count).

The volume: one demo subject (``scripts/data/demo/``, head with skull and scalp) at ``--shape`` voxels of
0.8 mm (the default 208 x 300 x 320 is ds005595's grid), ``--contrast``, seed ``--seed``.

A variant is ``NAME|OVERLAYS|ARGS``: overlays comma-separated (relative to ``pvs_bundle/``, after
``configs/inference.json``), then extra command-line arguments. A variant whose overlays include
``configs/inference_openvino.json`` or ``configs/inference_onnx.json`` gets the ONNX file exported first (with its
own overlays and window) into a copy of ``--ckpt_dir``, so the bundle's folders are not written to.

Run from the repository root (the default variants: the shipped model, eager and OpenVINO, 32^3 windows at 50 %
overlap against 64^3 at 25 %)::

    python benchmarks/end_to_end.py
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

BUNDLE_ROOT = Path(__file__).resolve().parents[1] / "pvs_bundle"
sys.path.insert(0, str(BUNDLE_ROOT))  # scripts/ as monai.bundle reaches it: from the bundle root

from generalisation import cpu_model_and_bf16  # noqa: E402  (benchmarks/ is this script's folder)

from scripts.data.demo import generate_dataset  # noqa: E402
from scripts.evaluation.path_agreement import mask_agreement  # noqa: E402

EXPORTING_OVERLAYS = ("configs/inference_openvino.json", "configs/inference_onnx.json")
PRETRAINED = "configs/pretrained.json"
OLD_WINDOW = "--sw_roi_size [32,32,32] --sw_overlap 0.5"  # 0.7.0's; configs/pretrained.json now sets 64^3 at 0.25
DEFAULT_VARIANTS = (
    f"eager 32^3/0.5|{PRETRAINED}|{OLD_WINDOW}",
    f"eager 64^3/0.25|{PRETRAINED}|",
    f"openvino 32^3/0.5|{PRETRAINED},configs/inference_openvino.json|{OLD_WINDOW}",
    f"openvino 64^3/0.25|{PRETRAINED},configs/inference_openvino.json|",
)
ONNX_CONVERTER_KWARGS = (
    "{'dynamo': False, 'opset_version': 18, 'input_names': ['image'], 'output_names': ['pred'], "
    "'dynamic_axes': {'image': {0: 'batch', 2: 'x', 3: 'y', 4: 'z'}, 'pred': {0: 'batch', 2: 'x', 3: 'y', 4: 'z'}}}"
)


@dataclass(frozen=True)
class Variant:
    """One inference command: a name for the table, overlays after inference.json, extra arguments."""

    name: str
    overlays: tuple[str, ...]
    args: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Variant:
        parts = text.split("|")
        if len(parts) != 3 or not parts[0]:
            raise ValueError(f"a variant is NAME|OVERLAYS|ARGS, not {text!r}")
        overlays = tuple(o for o in parts[1].split(",") if o)
        return cls(parts[0], overlays, tuple(shlex.split(parts[2])))

    @property
    def config_file(self) -> str:
        return str(["configs/inference.json", *self.overlays])

    @property
    def exports_onnx(self) -> bool:
        return any(o in EXPORTING_OVERLAYS for o in self.overlays)

    def window(self) -> list[int]:
        """The shape the ONNX export is traced with (its spatial axes stay dynamic): ``--sw_roi_size``, else 64^3."""
        if "--sw_roi_size" in self.args:
            return [int(v) for v in self.args[self.args.index("--sw_roi_size") + 1].strip("[]").split(",")]
        return [64, 64, 64]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", action="append", help="NAME|OVERLAYS|ARGS (repeat); default: four variants")
    parser.add_argument("--ckpt_dir", type=Path, default=BUNDLE_ROOT / "models", help="model folder (model.pt, .json)")
    parser.add_argument("--shape", type=int, nargs=3, default=[208, 300, 320], help="volume, voxels of 0.8 mm")
    parser.add_argument("--contrast", default="T2w", choices=("T2w", "T1w", "FLAIR"))
    parser.add_argument("--seed", type=int, default=9001, help="demo generator seed of the volume")
    parser.add_argument("--repeats", type=int, default=1, help="runs per variant (median reported)")
    parser.add_argument("--work_dir", type=Path, help="kept folder for the volume and outputs (default: temporary)")
    args = parser.parse_args(argv)
    args.variants = [Variant.parse(v) for v in (args.variant or DEFAULT_VARIANTS)]
    return args


def run(command: list[str], log: Path) -> float:
    """Run a command from pvs_bundle/, its output to ``log``; return its wall seconds; stop on failure."""
    start = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(command, cwd=BUNDLE_ROOT, stdout=out, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{shlex.join(command)} failed (exit {done.returncode}); see {log}")
    return seconds


def export_onnx(variant: Variant, ckpt_dir: Path, log: Path) -> float:
    """Export the variant's network to ``ckpt_dir/model.onnx`` with ``onnx_export``; return its seconds."""
    config = str(["configs/inference.json", *(o for o in variant.overlays if o not in EXPORTING_OVERLAYS)])
    command = [sys.executable, "-m", "monai.bundle", "onnx_export", "network_def"]
    command += ["--filepath", str(ckpt_dir / "model.onnx"), "--ckpt_file", str(ckpt_dir / "model.pt")]
    command += ["--meta_file", "configs/metadata.json", "--config_file", config, "--ckpt_dir", str(ckpt_dir)]
    command += ["--input_shape", str([1, 1, *variant.window()]), "--use_trace", "True"]
    command += ["--converter_kwargs", ONNX_CONVERTER_KWARGS]
    return run(command, log)


def mask_of(output_dir: Path) -> np.ndarray:
    masks = sorted(output_dir.rglob("*desc-pvs_mask.nii.gz"))
    if len(masks) != 1:
        raise SystemExit(f"expected one mask under {output_dir}, found {len(masks)}")
    return np.asarray(nib.load(str(masks[0])).dataobj) > 0


def benchmark(args: argparse.Namespace, work: Path) -> None:
    dataset = generate_dataset(work / "data", n_subjects=1, shape=args.shape, seed=args.seed, contrast=args.contrast)
    image = next(dataset.glob(f"sub-*/anat/*_{args.contrast}.nii.gz"))
    rows: list[dict] = []
    for k, variant in enumerate(args.variants):
        ckpt_dir = work / f"ckpt_{k}"
        ckpt_dir.mkdir()
        for name in ("model.pt", "model.json"):  # not the cached exports, nor other models' folders
            if (args.ckpt_dir / name).is_file():
                shutil.copy(args.ckpt_dir / name, ckpt_dir / name)
        export = export_onnx(variant, ckpt_dir, work / f"export_{k}.log") if variant.exports_onnx else None
        seconds = []
        for r in range(args.repeats):
            out = work / f"out_{k}_{r}"
            command = [sys.executable, "-m", "monai.bundle", "run", "inferring", "--config_file", variant.config_file]
            command += ["--ckpt_dir", str(ckpt_dir), "--input_files", str([str(image)]), "--output_dir", str(out)]
            command += list(variant.args)
            seconds.append(run(command, work / f"run_{k}_{r}.log"))
        rows.append({"variant": variant, "seconds": statistics.median(seconds), "export": export, "mask": out})
        print(f"{variant.name}: {rows[-1]['seconds']:.1f} s", flush=True)
    reference = mask_of(rows[0]["mask"])
    base = rows[0]["seconds"]
    cpu, bf16 = cpu_model_and_bf16()
    print(
        f"\nOne {args.contrast} volume of {args.shape} voxels (0.8 mm; demo generator seed {args.seed}), model "
        f"{args.ckpt_dir.name}; whole `run inferring` commands, median of {args.repeats}, each alone; "
        f"{os.cpu_count()} CPU cores ({cpu}; {bf16}), torch {torch.__version__}."
    )
    print(f"{'variant':<22} {'s/volume':>9} {'speed-up':>9} {'ONNX export s':>14} {'Dice vs first':>14} {'PVS':>6}")
    for row in rows:
        agreement = mask_agreement(reference, mask_of(row["mask"]))
        export = f"{row['export']:.1f}" if row["export"] is not None else "-"
        print(
            f"{row['variant'].name:<22} {row['seconds']:>9.1f} {base / row['seconds']:>8.2f}x {export:>14} "
            f"{agreement['dice']:>14.4f} {agreement['count_other']:>6}"
        )


def main() -> None:
    args = parse_args()
    if args.work_dir:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        benchmark(args, args.work_dir)
        return
    with tempfile.TemporaryDirectory() as tmp:
        benchmark(args, Path(tmp))


if __name__ == "__main__":
    main()
