"""Time of the measurement stage (census, regions, QC report) on one HCP-A-sized case, beside inference's.

A 208 x 300 x 320 grid at 0.8 mm holds a head-like T2 image (bright CSF shell, darker brain, scalp), a few hundred
synthetic PVS (capsules of random direction, 0.8-2.4 mm wide, 2-16 mm long) with a probability map, the head
mask, and a parcellation in FreeSurferColorLUT numbers stored on a 1 mm grid of the same head (so it is really
resampled). :class:`scripts.measurement.measure.PVSMeasurement` (the ``measurement`` of ``configs/inference.json``)
measures the case and writes the census, the region table and the report, as inference does after each case.
The figure is set beside the CPU inference time of that volume in docs/performance.md (B0, eager, 2 cores: 321 s).

Run from the repository root (under the CPU lock on a shared machine)::

    python benchmarks/measurement_overhead.py      # ~1 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

BUNDLE_ROOT = Path(__file__).resolve().parents[1] / "pvs_bundle"
sys.path.insert(0, str(BUNDLE_ROOT))

from scripts.measurement.measure import PVSMeasurement  # noqa: E402

SHAPE = (208, 300, 320)
SPACING = 0.8
INFERENCE_S = 321.0
"""Model card (Performance): CPU inference of one 208 x 300 x 320 volume, B0, eager, 2 cores."""


def synthetic_case(n_pvs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Image, PVS mask, probabilities, head mask and a 1 mm parcellation (with its affine) of a synthetic head."""
    rng = np.random.default_rng(seed)
    centre = (np.array(SHAPE) - 1) / 2
    axes = [(np.arange(n) - c) * SPACING for n, c in zip(SHAPE, centre, strict=True)]
    r = np.sqrt(axes[0][:, None, None] ** 2 / 0.8 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2 / 0.9)
    brain, scalp = r < 70, (r > 76) & (r < 82)
    image = np.where(brain, 400.0, 0.0) + np.where((r >= 64) & (r < 70), 600.0, 0.0) + np.where(scalp, 450.0, 0.0)
    mask = np.zeros(SHAPE, dtype=bool)
    for _ in range(n_pvs):
        start = centre + rng.uniform(-45, 45, size=3) / SPACING
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        length, radius = rng.uniform(2, 16) / SPACING, rng.uniform(0.5, 1.5) / SPACING
        lo = np.floor(np.minimum(start, start + length * direction) - radius).astype(int)
        hi = np.ceil(np.maximum(start, start + length * direction) + radius).astype(int) + 1
        grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi, strict=True)], indexing="ij"), -1)
        t = np.clip((grid - start) @ direction, 0, length)
        inside = np.linalg.norm(grid - (start + t[..., None] * direction), axis=-1) <= radius
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        mask[box] |= inside
    image = image + 600 * mask + rng.normal(0, 20, SHAPE)
    prob = np.where(mask, 0.8, 0.02).astype(np.float32)
    one_mm = tuple(int(n * SPACING) for n in SHAPE)
    coarse = [(np.arange(n) - (n - 1) / 2) for n in one_mm]
    rr = np.sqrt(
        coarse[0][:, None, None] ** 2 / 0.8 + coarse[1][None, :, None] ** 2 + coarse[2][None, None, :] ** 2 / 0.9
    )
    labels = np.where(rr < 70, 2, 0) + np.where(rr < 25, 10, 0) + np.where((rr >= 64) & (rr < 70), 1, 0)
    labels[(one_mm[0] // 2) :] = np.where(labels[(one_mm[0] // 2) :] == 2, 41, labels[(one_mm[0] // 2) :])
    return image.astype(np.int16), mask, prob, image > 200, labels.astype(np.int16)


def main() -> None:
    """Build the case, measure it (and write everything) ``--repeats`` times, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n_pvs", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    image, mask, prob, head, labels = synthetic_case(args.n_pvs)
    affine = np.diag([SPACING] * 3 + [1.0])
    affine[:3, 3] = -(np.array(SHAPE) - 1) / 2 * SPACING
    parcellation_affine = np.eye(4)
    parcellation_affine[:3, 3] = -(np.array(labels.shape) - 1) / 2
    config = json.loads((BUNDLE_ROOT / "configs" / "inference.json").read_text())
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = root / "in" / "sub-001_T2w.nii.gz"
        path.parent.mkdir(parents=True)
        nib.save(nib.Nifti1Image(image, affine), path)
        seg = root / "seg" / "sub-001" / "anat" / "sub-001_dseg.nii.gz"
        seg.parent.mkdir(parents=True)
        nib.save(nib.Nifti1Image(labels, parcellation_affine), seg)
        reference = nib.load(path)
        for repeat in range(args.repeats):
            out = root / f"out{repeat}"
            stage = PVSMeasurement(
                config["regions"],
                out,
                parcellation_dir=root / "seg",
            )
            start = time.perf_counter()
            burden = stage.measure_case("sub-001", reference, path, mask, prob, head)
            stage.write()
            times.append(time.perf_counter() - start)
    best = min(times)
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}; shape {SHAPE}; {burden['pvs_count']} PVS")
    print(
        f"measurement stage (census + regions + report), best of {args.repeats}: {best:.2f} s  (all: "
        + ", ".join(f"{t:.2f}" for t in times)
        + ")"
    )
    print(f"inference of that volume (model card, B0 eager, 2 CPU cores): {INFERENCE_S:.0f} s")
    print(f"overhead: {100 * best / INFERENCE_S:.1f} % of inference (limit 10 %)")


if __name__ == "__main__":
    main()
