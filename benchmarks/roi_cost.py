"""What the counting ROI costs and what it saves: true PVS lost and specks kept out, per erosion of the brain mask.

The measurement counts PVS only inside the brain eroded by ``roi#erosion_mm`` (``scripts/measurement/roi.py``).
This script measures that rule for several erosions on held-out data with a known truth:

1. Held-out BIDS datasets from the demo generator (``scripts.data.demo``) at seeds no training used (``--seeds``),
   ``--n_subjects`` each, at the demo's field of view (``--shape``; the default crop lies inside the brain, cut on
   every side; ``--shape 208 300 320`` is ds005595's whole head, skull, scalp and the brain's surface in view).
2. Each ``--model NAME=CONFIG_OVERLAYS:CKPT_DIR`` segments them with the real ``python -m monai.bundle run inferring``
   (its stored threshold and TTA), writing the masks.
3. Per case, the brain is estimated as the measurement estimates it without a parcellation
   (``estimate_brain_mask``), from the head mask inference gives it: the model's own preprocessing and
   postprocessing, built from ``configs/inference.json`` and the model's overlays, take the image there and back.
   The brain is eroded by each ``--erosions`` value (mm). Pooled over the cases:

   - ``true lost``: true PVS (26-connected components of the reference) with no voxel in the ROI, and their share;
   - ``true voxels out``: the share of true PVS voxels outside the ROI;
   - ``specks out``: predicted components touching no true PVS and lying wholly outside the ROI (kept out of the
     counts), against all predicted components touching none;
   - ``count ICC``: ICC(A,1) over the cases of the PVS counted (components of prediction inside the ROI) against
     every true PVS: what a study gets against what it should get; ``count MAE``: mean absolute count error.

Run from the repository root::

    python benchmarks/roi_cost.py --model pretrained=configs/pretrained.json:models \\
        --model demo=configs/demo.json:models/demo
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser

BUNDLE_ROOT = Path(__file__).resolve().parents[1] / "pvs_bundle"
sys.path.insert(0, str(BUNDLE_ROOT))  # scripts/ as monai.bundle reaches it: from the bundle root

from generalisation import cpu_model_and_bf16, overrides, parse_model  # noqa: E402  (benchmarks/ is this script's folder)

from scripts.agreement import agreement  # noqa: E402
from scripts.data.demo import DEMO_SHAPE, generate_dataset  # noqa: E402
from scripts.masks import label_components  # noqa: E402
from scripts.measurement.roi import erode_mm  # noqa: E402
from scripts.regions import estimate_brain_mask  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, help="NAME=CONFIG_OVERLAYS:CKPT_DIR (repeat)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[9001, 4242], help="demo generator seeds (held out)")
    parser.add_argument("--n_subjects", type=int, default=6, help="subjects per seed")
    parser.add_argument("--shape", type=int, nargs=3, default=list(DEMO_SHAPE), help="field of view, 0.8 mm voxels")
    parser.add_argument("--erosions", type=float, nargs="+", default=[0.0, 1.0, 2.0, 3.0, 4.0], help="mm")
    parser.add_argument("--work_dir", type=Path, help="kept folder for data and masks (default: temporary)")
    parser.add_argument("--out", type=Path, default=Path("roi_cost_benchmark"), help="folder of the tables")
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE for every inference run (repeat)")
    return parser.parse_args(argv)


def head_masker(model: Any) -> Any:
    """A function image file -> the head mask inference measures with (its preprocessing and postprocessing)."""
    parser = ConfigParser()
    parser.read_config([str(BUNDLE_ROOT / "configs/inference.json"), *(str(BUNDLE_ROOT / o) for o in model.overlays)])
    parser["bundle_root"], parser["ckpt_dir"] = str(BUNDLE_ROOT), str(model.ckpt_dir)
    preprocessing, postprocessing = (
        parser.get_parsed_content("preprocessing"),
        parser.get_parsed_content("postprocessing"),
    )

    def head(image_file: Path) -> np.ndarray:
        item = preprocessing({"image": str(image_file)})
        item["pred"] = torch.zeros_like(item["image"])
        return np.asarray(postprocessing(item)["head"][0]) > 0.5

    return head


def segment(model: Any, dataset: Path, out: Path, extra: list[str]) -> None:
    config = str(["configs/inference.json", *model.overlays])
    command = [sys.executable, "-m", "monai.bundle", "run", "inferring", "--config_file", config]
    command += ["--ckpt_dir", str(model.ckpt_dir), "--dataset_dir", str(dataset), "--output_dir", str(out), *extra]
    done = subprocess.run(command, cwd=BUNDLE_ROOT, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")


def case_rows(dataset: Path, out: Path, erosions: list[float], head_mask: Any) -> list[dict[str, Any]]:
    rows = []
    for image_file in sorted(dataset.glob("sub-*/anat/*_T2w.nii.gz")):
        subject = image_file.name.split("_")[0]
        image = nib.load(str(image_file))
        truth = np.asarray(nib.load(str(next(dataset.glob(f"derivatives/mask/{subject}/*.nii.gz")))).dataobj) > 0
        pred = np.asarray(nib.load(str(next(out.rglob(f"{subject}*desc-pvs_mask.nii.gz")))).dataobj) > 0
        brain = estimate_brain_mask(head_mask(image_file), image.affine)
        true_labels, n_true = label_components(truth)
        pred_labels, n_pred = label_components(pred)
        specks = np.setdiff1d(np.arange(1, n_pred + 1), np.unique(pred_labels[truth]))
        for erosion in erosions:
            roi = erode_mm(brain, image.affine, erosion)
            true_in = np.unique(true_labels[roi & truth])
            pred_in = np.unique(pred_labels[roi & pred])
            rows.append(
                {
                    "case": subject,
                    "erosion_mm": erosion,
                    "true_pvs": n_true,
                    "true_lost": n_true - int((true_in > 0).sum()),
                    "true_voxels": int(truth.sum()),
                    "true_voxels_out": int((truth & ~roi).sum()),
                    "specks": len(specks),
                    "specks_out": int(np.isin(specks, pred_in, invert=True).sum()),
                    "counted": label_components(pred & roi)[1],
                }
            )
    return rows


def summary(rows: list[dict[str, Any]], erosion: float) -> dict[str, Any]:
    chosen = [r for r in rows if r["erosion_mm"] == erosion]
    total = {k: sum(r[k] for r in chosen) for k in ("true_pvs", "true_lost", "true_voxels", "true_voxels_out")}
    specks = sum(r["specks"] for r in chosen)
    lost = 100 * total["true_lost"] / max(total["true_pvs"], 1)
    counts = agreement([r["counted"] for r in chosen], [r["true_pvs"] for r in chosen])
    return {
        "erosion_mm": erosion,
        "true_lost": f"{total['true_lost']}/{total['true_pvs']} ({lost:.1f} %)",
        "true_voxels_out": f"{100 * total['true_voxels_out'] / max(total['true_voxels'], 1):.1f} %",
        "specks_out": f"{sum(r['specks_out'] for r in chosen)}/{specks}",
        "count_icc": counts["icc_a1"],
        "count_mae": float(np.mean([abs(r["counted"] - r["true_pvs"]) for r in chosen])),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    models = [parse_model(spec) for spec in args.model]
    cpu, bf16 = cpu_model_and_bf16()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        for seed in args.seeds:
            dataset = work / f"data_seed{seed}_{'x'.join(map(str, args.shape))}"
            if not dataset.is_dir():
                generate_dataset(dataset, n_subjects=args.n_subjects, seed=seed, shape=args.shape)
            for model in models:
                out = work / f"{model.name}_{dataset.name}"
                if not out.is_dir():
                    segment(model, dataset, out, overrides(args.set))
                results[f"{model.name} seed {seed}"] = case_rows(dataset, out, args.erosions, head_masker(model))
    lines = [
        f"Held-out data: demo generator (scripts/data/demo), seeds {args.seeds}, {args.n_subjects} subjects each, "
        f"field of view {args.shape} voxels of 0.8 mm; masks by `run inferring` (stored threshold and TTA); "
        f"brain estimated from inference's head mask, eroded by each value; settings {args.set or 'stored'}. "
        f"Machine: {cpu} ({bf16}).",
        "",
        "| model, data | erosion (mm) | true PVS lost | true voxels outside | specks kept out | count ICC(A,1) "
        "| count MAE |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rows in results.items():
        for erosion in args.erosions:
            s = summary(rows, erosion)
            lines.append(
                f"| {name} | {erosion:g} | {s['true_lost']} | {s['true_voxels_out']} | {s['specks_out']} | "
                f"{s['count_icc']:.3f} | {s['count_mae']:.1f} |"
            )
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "roi_cost.md").write_text(text + "\n")
    (args.out / "roi_cost.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
