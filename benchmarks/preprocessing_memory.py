"""Peak memory and time of the shared preprocessing on one HCP-A-sized volume: float32 resampling against float64.

``scripts.data.transforms.preprocessing`` (load, channel first, binarise, RAS, resample to ``pixdim``, percentile
scaling, head crop) resamples in float32; MONAI's ``Spacingd`` defaults to float64, which makes a float64 copy
of the volume and of its sampling grid. Both variants run the bundle's own transform list, in a fresh child
process each, on the same image and mask (int16 .nii.gz) written so that the output grid is 208 x 300 x 320 at
``pixdim`` (the input is at ``--input_spacing``, so the resampling really happens). The peak resident memory
(``VmHWM``) is reported in all and above what the process held after its imports.

Run from the repository root::

    python benchmarks/preprocessing_memory.py      # 166 x 240 x 256 at 1.0 mm -> 0.8 mm: ~30 s on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

BUNDLE_ROOT = Path(__file__).resolve().parents[1] / "pvs_bundle"
sys.path.insert(0, str(BUNDLE_ROOT))

from monai.transforms import Compose, Spacingd  # noqa: E402

from scripts.data.transforms import preprocessing  # noqa: E402

VARIANTS = {"float64 (MONAI default)": np.float64, "float32 (bundle)": np.float32}
OUTPUT_SHAPE = (208, 300, 320)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input_spacing", type=float, default=1.0, help="voxel size of the written input, mm")
    parser.add_argument("--pixdim", type=float, default=0.8, help="preprocessing voxel size, mm")
    parser.add_argument("--variant", choices=list(VARIANTS), help=argparse.SUPPRESS)  # set in the child processes
    parser.add_argument("--data_dir", help=argparse.SUPPRESS)
    return parser.parse_args()


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (``VmHWM``, which starts afresh at exec), in MiB."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


def write_case(folder: Path, input_spacing: float, pixdim: float) -> dict[str, str]:
    """An int16 head with bright tubes and their mask, on a grid that resamples to ``OUTPUT_SHAPE`` at ``pixdim``."""
    shape = tuple(round(s * pixdim / input_spacing) for s in OUTPUT_SHAPE)
    rng = np.random.default_rng(0)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij", sparse=True)
    head = (x / 0.85) ** 2 + (y / 0.9) ** 2 + (z / 0.85) ** 2 < 1.0
    image = np.where(head, 300.0, 10.0).astype(np.float32) + rng.normal(0, 25, shape).astype(np.float32)
    mask = np.zeros(shape, dtype=np.int16)
    for _ in range(60):
        cx, cy, cz = (int(rng.integers(s // 4, 3 * s // 4)) for s in shape)
        mask[cx : cx + 2, cy : cy + 2, cz : cz + 10] = 1
    image[mask > 0] = 900.0
    affine = np.diag([input_spacing, input_spacing, input_spacing, 1.0])
    case = {"image": str(folder / "sub-01_T2w.nii.gz"), "label": str(folder / "sub-01_desc-mask_PVS.nii.gz")}
    nib.save(nib.Nifti1Image(np.clip(image, 0, None).astype(np.int16), affine), case["image"])
    nib.save(nib.Nifti1Image(mask, affine), case["label"])
    return case


def measure(args: argparse.Namespace) -> dict[str, float]:
    """In a child process: run the preprocessing once with the variant's resampling dtype."""
    imports_rss = peak_rss_mib()
    case = json.loads((Path(args.data_dir) / "case.json").read_text())
    transforms = preprocessing([args.pixdim] * 3, {"mode": "percentile", "lower": 0.5, "upper": 99.5})
    for transform in transforms:
        if isinstance(transform, Spacingd):
            transform.dtype = (VARIANTS[args.variant],) * len(transform.keys)
    start = time.perf_counter()
    out = Compose(transforms)(case)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "peak_rss_mib": peak_rss_mib(),
        "above_imports_mib": peak_rss_mib() - imports_rss,
        "shape": list(out["image"].shape[1:]),
        "image_dtype": str(out["image"].dtype),
    }


def run_variants(
    script: str, variants: list[str], input_spacing: float, pixdim: float
) -> tuple[dict[str, dict], tuple[int, ...]]:
    """Write the case once, run ``script --variant V`` for each variant in a fresh interpreter (its last line of
    output is its JSON figures); return the figures by variant and the shape of the written image."""
    with tempfile.TemporaryDirectory(prefix="pvs_memory_benchmark_") as folder:
        case = write_case(Path(folder), input_spacing, pixdim)
        (Path(folder) / "case.json").write_text(json.dumps(case))
        results = {}
        for variant in variants:
            command = [sys.executable, script, *sys.argv[1:], "--variant", variant, "--data_dir", folder]
            proc = subprocess.run(command, check=True, capture_output=True, text=True)
            results[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
        return results, nib.load(case["image"]).shape


def main() -> None:
    args = parse_args()
    if args.variant is not None:
        print(json.dumps(measure(args)))
        return
    results, input_shape = run_variants(__file__, list(VARIANTS), args.input_spacing, args.pixdim)
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs\ninput {'x'.join(map(str, input_shape))} int16 at "
        f"{args.input_spacing:g} mm -> {args.pixdim:g} mm; "
        "each variant in its own process\n"
    )
    base = results["float64 (MONAI default)"]
    print(f"{'resampling':<26}{'seconds':>9}{'peak RSS MiB':>14}{'above imports MiB':>19}{'vs float64':>12}  output")
    for variant, result in results.items():
        ratio = result["above_imports_mib"] / base["above_imports_mib"]
        print(
            f"{variant:<26}{result['seconds']:>9.1f}{result['peak_rss_mib']:>14.0f}{result['above_imports_mib']:>19.0f}"
            f"{ratio:>11.2f}x  {'x'.join(map(str, result['shape']))} {result['image_dtype']}"
        )


if __name__ == "__main__":
    main()
