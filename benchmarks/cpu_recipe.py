"""The bundle's CPU recipe against a plain MONAI/PyTorch loop, both trained for the same CPU-time budget, in one run.

1. A fresh held-out synthetic dataset (``scripts.data.demo.generate_dataset``; by default 12 subjects of
   96 × 96 × 64 at 0.8 mm, seed 2026, not the demo's 0) split 5 training, 1 validation (a subject with PVS), the
   rest test (the subjects without PVS among them), written as a bundle datalist.
2. "recipe": the real bundle, ``python -m monai.bundle run training`` with ``configs/train.json`` +
   ``configs/demo.json``, that datalist and ``--max_cpu_minutes`` (``max_epochs`` raised so the budget ends it),
   then ``run inferring`` on the test images (``demo.json``: since 0.6.0 mirrored, 8 passes): mask files.
3. "plain": a plain loop: UNet++ EfficientNet-B0 (random init, BatchNorm), 64³ patches, 2 per step drawn 2 : 1
   PVS : background, z-score inside the head, DiceCE, AdamW 1e-3, gradient clipping at 1, no augmentation, until
   the same budget; the last model segments the test images (sliding window, overlap 0.5) on their own grids.
4. Both arms' masks are scored by the same code (``scripts.evaluation.case_metrics``: Dice, VALDO detection F1)
   against the reference masks in native space.

CPU time is user + system time of the training process and its workers (``scripts.training.budget``), not wall
time; the plain loop's count starts when it loads its data, the recipe's when its process starts. Prints one table
(arm, CPU minutes used in training, wall seconds, epochs and steps, test Dice mean ± sd over the test cases,
detection F1 mean over the cases with PVS, and the recipe / plain ratio) and writes it with every case's metrics to
``OUT/cpu_recipe.json``; a run rewrites what an earlier one left in ``OUT``. Run from the repository root on a
quiet machine::

    python benchmarks/cpu_recipe.py                                  # 30 CPU minutes per arm
    python benchmarks/cpu_recipe.py --cpu_minutes 0.5 --out /tmp/cpu_recipe   # a smoke test
    python benchmarks/cpu_recipe.py --arms recipe --set patch_size=[64,64,64] --set lr_schedule=poly
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

BUNDLE_ROOT = Path(__file__).resolve().parents[1] / "pvs_bundle"
sys.path.insert(0, str(BUNDLE_ROOT))  # scripts/ as monai.bundle reaches it: from the bundle root

from monai.data import CacheDataset, DataLoader  # noqa: E402
from monai.inferers import sliding_window_inference  # noqa: E402
from monai.losses import DiceCELoss  # noqa: E402
from monai.transforms import (  # noqa: E402
    Compose,
    EnsureChannelFirstd,
    LoadImaged,
    NormalizeIntensityd,
    RandCropByLabelClassesd,
    SpatialPadd,
)
from monai.utils import set_determinism  # noqa: E402

from scripts.cpu import available_cores  # noqa: E402
from scripts.data.datalist import find_pairs  # noqa: E402
from scripts.data.demo import generate_dataset  # noqa: E402
from scripts.evaluation.case_metrics import case_metrics  # noqa: E402
from scripts.evaluation.summary import summarize  # noqa: E402
from scripts.inference.inference_inputs import MASK_SUFFIX, output_stem  # noqa: E402
from scripts.model.network import build_unetplusplus  # noqa: E402
from scripts.training.budget import process_cpu_seconds  # noqa: E402

ARMS = ("recipe", "plain")
N_TRAINING, N_VALIDATION = 5, 1
PLAIN_PATCH = (64, 64, 64)
BUDGET_LINE = re.compile(r"reached after (\d+) epochs, (\d+) iterations")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu_minutes", type=float, default=30.0, help="CPU budget of each arm's training")
    parser.add_argument("--arms", default="recipe,plain", help="comma-separated arms to run: recipe, plain")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override of the recipe's configs, passed on as --KEY VALUE (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=2026, help="seed of the synthetic dataset (the demo's is 0)")
    parser.add_argument("--shape", type=int, nargs=3, default=[96, 96, 64], help="volume shape in voxels at 0.8 mm")
    parser.add_argument("--n_subjects", type=int, default=12, help="subjects: 5 train, 1 validate, the rest test")
    parser.add_argument("--out", type=Path, default=Path("cpu_recipe_benchmark"), help="folder of all outputs")
    args = parser.parse_args(argv)
    args.arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown or not args.arms:
        parser.error(f"--arms must be a comma-separated subset of {','.join(ARMS)}, not {args.arms}.")
    if not args.cpu_minutes > 0:
        parser.error(f"--cpu_minutes must be a positive number, not {args.cpu_minutes}.")
    bad = [s for s in args.set if "=" not in s or not s.split("=", 1)[0]]
    if bad:
        parser.error(f"--set must be KEY=VALUE (e.g. --set patch_size=[64,64,64]), not {bad}.")
    return args


def pvs_free_cases(empty_masks: Iterable[str]) -> list[dict]:
    """The datalist cases of the subjects whose mask holds no PVS (``find_pairs``'s report): test cases only."""
    cases = []
    for label in sorted(empty_masks):
        subject = Path(label).parent.name
        cases.append({"image": f"{subject}/anat/{subject}_T2w.nii.gz", "label": label, "id": subject})
    return cases


def write_datalist(dataset_dir: Path, datalist_file: Path, seed: int) -> dict[str, list[dict]]:
    """Split the subjects with PVS 5 / 1 / rest (shuffled with ``seed``); those without PVS are tested only.

    Returns:
        The datalist (paths relative to ``dataset_dir``), as written to ``datalist_file``.

    Raises:
        ValueError: when fewer than 6 subjects have PVS, or none is left to test.
    """
    with_pvs, report = find_pairs(dataset_dir)
    n_needed = N_TRAINING + N_VALIDATION
    if len(with_pvs) < n_needed or len(with_pvs) + len(report.empty_masks) <= n_needed:
        raise ValueError(
            f"--n_subjects must give at least {n_needed} subjects with PVS and one more to test, not "
            f"{len(with_pvs)} with PVS and {len(report.empty_masks)} without."
        )
    order = np.random.default_rng(seed).permutation(len(with_pvs))
    shuffled = [with_pvs[i] for i in order]
    empty = pvs_free_cases(report.empty_masks)
    datalist = {
        "training": shuffled[:N_TRAINING],
        "validation": shuffled[N_TRAINING:n_needed],
        "test": sorted(shuffled[n_needed:] + empty, key=lambda c: c["id"]),
    }
    datalist_file.write_text(json.dumps(datalist, indent=4))
    return datalist


def recipe_overrides(settings: list[str]) -> list[str]:
    """``--set KEY=VALUE`` items as ``--KEY VALUE`` arguments of ``python -m monai.bundle run``."""
    return [part for item in settings for part in ("--" + item.split("=", 1)[0], item.split("=", 1)[1])]


def run_bundle(args: list[str], log_file: Path) -> str:
    """Run ``python -m monai.bundle`` from the bundle root, log its output, and return it.

    Raises:
        RuntimeError: when the run fails (the end of its output is in the message).
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args], cwd=BUNDLE_ROOT, env=env, capture_output=True, text=True
    )
    log_file.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed (log {log_file}):\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc.stdout + proc.stderr


def recipe_arm(args: argparse.Namespace, dataset_dir: Path, datalist_file: Path, test: list[dict]) -> dict:
    """Train the bundle's CPU recipe for the budget, segment the test images; return its figures and masks."""
    work = args.out / "recipe"
    shutil.rmtree(work, ignore_errors=True)  # a fresh run: the bundle would resume an earlier one found there
    models, overrides = ["--ckpt_dir", str(work / "models")], recipe_overrides(args.set)
    sets = {item.split("=", 1)[0] for item in args.set}
    epochs = [] if "max_epochs" in sets else ["--max_epochs", "100000"]  # the budget ends training
    train = ["run", "training", "--config_file", "['configs/train.json','configs/demo.json']", *models]
    train += ["--datalist_file", str(datalist_file), "--dataset_dir", str(dataset_dir)]
    train += ["--output_dir", str(work / "eval"), "--max_cpu_minutes", str(args.cpu_minutes), *epochs, *overrides]
    start = time.perf_counter()
    log = run_bundle(train, args.out / "recipe_training.log")
    wall = time.perf_counter() - start
    history = json.loads((work / "eval" / "training_history.json").read_text())
    stopped = BUDGET_LINE.search(log)
    images = json.dumps([str(dataset_dir / case["image"]) for case in test])
    infer = ["run", "inferring", "--config_file", "['configs/inference.json','configs/demo.json']", *models]
    infer += ["--input_files", images, "--output_dir", str(work / "test"), *overrides]
    run_bundle(infer, args.out / "recipe_inference.log")
    return {
        "cpu_minutes": history["epochs"][-1].get("cpu_minutes"),
        "wall_s": wall,
        "epochs": history["epochs"][-1]["epoch"],
        "steps": int(stopped.group(2)) if stopped else None,
        "best_validation": history["best"],
        "masks": {case["id"]: work / "test" / (output_stem(Path(case["image"])) + MASK_SUFFIX) for case in test},
    }


def plain_arm(args: argparse.Namespace, dataset_dir: Path, datalist: dict[str, list[dict]]) -> dict:
    """Train the plain loop for the budget and segment the test images with its last model."""
    set_determinism(seed=0)
    torch.set_num_threads(available_cores())
    keys = ["image", "label"]
    load = [LoadImaged(keys), EnsureChannelFirstd(keys), NormalizeIntensityd("image", nonzero=True)]
    crop = RandCropByLabelClassesd(keys, "label", PLAIN_PATCH, ratios=[1, 2], num_classes=2, num_samples=2)
    cases = [{k: str(dataset_dir / c[k]) for k in keys} for c in datalist["training"]]
    start_cpu, start, steps = process_cpu_seconds(), time.perf_counter(), 0  # caching counts, as in the recipe
    data = CacheDataset(cases, Compose([*load, SpatialPadd(keys, PLAIN_PATCH), crop]), num_workers=0)
    loader = DataLoader(data, batch_size=1, shuffle=True, num_workers=0)
    network = build_unetplusplus("efficientnet-b0", None, patch_size=PLAIN_PATCH)
    loss_function = DiceCELoss(sigmoid=True)
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
    while process_cpu_seconds() - start_cpu < args.cpu_minutes * 60:
        for batch in loader:
            optimizer.zero_grad()
            loss = loss_function(network(batch["image"]), (batch["label"] > 0).float())
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
            optimizer.step()
            steps += 1
            if process_cpu_seconds() - start_cpu >= args.cpu_minutes * 60:
                break
    cpu_minutes, wall = (process_cpu_seconds() - start_cpu) / 60, time.perf_counter() - start
    network.eval()
    masks, out_dir = {}, args.out / "plain" / "test"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    for case in datalist["test"]:
        image = Compose(load)({k: str(dataset_dir / case[k]) for k in keys})["image"]
        with torch.no_grad():
            logits = sliding_window_inference(image[None], PLAIN_PATCH, 2, network, overlap=0.5)
        masks[case["id"]] = out_dir / (output_stem(Path(case["image"])) + MASK_SUFFIX)
        mask = (torch.sigmoid(logits[0, 0]) >= 0.5).numpy().astype(np.uint8)
        nib.save(nib.Nifti1Image(mask, nib.load(dataset_dir / case["image"]).affine), masks[case["id"]])
    return {"cpu_minutes": cpu_minutes, "wall_s": wall, "epochs": steps // len(cases), "steps": steps, "masks": masks}


def score(masks: dict[str, Path], dataset_dir: Path, test: list[dict]) -> dict[str, Any]:
    """Score one arm's test masks against the references in native space; per case and summarised."""
    rows = []
    for case in test:
        reference = nib.load(dataset_dir / case["label"])
        spacing = reference.header.get_zooms()[:3]
        pred = np.asanyarray(nib.load(masks[case["id"]]).dataobj)
        rows.append({"id": case["id"], **case_metrics(pred, np.asanyarray(reference.dataobj), spacing)})
    summary = summarize([{k: v for k, v in row.items() if k != "id"} for row in rows])
    return {"dice": summary["dice"], "det_f1": summary["det_f1"], "cases": rows}


def ratios(results: dict[str, dict]) -> dict[str, float] | None:
    """Recipe / plain of the mean test Dice and detection F1 (NaN where the plain loop scored 0), if both ran."""
    if not set(ARMS) <= set(results):
        return None
    means = {arm: {m: results[arm][m]["mean"] for m in ("dice", "det_f1")} for arm in ARMS}
    return {m: means["recipe"][m] / means["plain"][m] if means["plain"][m] else math.nan for m in means["plain"]}


def print_table(results: dict[str, dict], ratio: dict[str, float] | None) -> None:
    """Print the side-by-side table of the arms and the recipe / plain ratio."""
    print(f"{'arm':<8} {'CPU min':>8} {'wall s':>7} {'epochs':>7} {'steps':>6} {'test Dice':>15} {'det F1':>7}")
    for arm, r in results.items():
        dice = f"{r['dice']['mean']:.3f} ± {r['dice']['std']:.3f}"
        steps = "" if r["steps"] is None else r["steps"]
        print(
            f"{arm:<8} {r['cpu_minutes']:>8.2f} {r['wall_s']:>7.0f} {r['epochs']:>7} {steps:>6} {dice:>15} "
            f"{r['det_f1']['mean']:>7.3f}"
        )
    if ratio is not None:
        print(f"recipe / plain: Dice × {ratio['dice']:.3f}, detection F1 × {ratio['det_f1']:.3f}")


def main() -> None:
    args = parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    dataset_dir = args.out / "data"
    generate_dataset(dataset_dir, n_subjects=args.n_subjects, shape=args.shape, seed=args.seed, overwrite=True)
    datalist_file = args.out / "datalist.json"
    datalist = write_datalist(dataset_dir, datalist_file, args.seed)
    results = {}
    for arm in args.arms:
        print(f"{arm}: training for {args.cpu_minutes:g} CPU minutes …", flush=True)
        if arm == "recipe":
            run = recipe_arm(args, dataset_dir, datalist_file, datalist["test"])
        else:
            run = plain_arm(args, dataset_dir, datalist)
        masks = run.pop("masks")
        results[arm] = {**run, **score(masks, dataset_dir, datalist["test"])}
    ratio = ratios(results)
    print_table(results, ratio)
    report = {
        "settings": {
            "cpu_minutes": args.cpu_minutes,
            "set": args.set,
            "seed": args.seed,
            "shape": args.shape,
            "n_subjects": args.n_subjects,
            "split": {k: [c["id"] for c in v] for k, v in datalist.items()},
        },
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": available_cores()},
        "arms": results,
        "recipe_over_plain": ratio,
    }
    plain_json = json.loads(json.dumps(report, default=str), parse_constant=lambda constant: None)  # NaN: null
    (args.out / "cpu_recipe.json").write_text(json.dumps(plain_json, indent=4, allow_nan=False) + "\n")
    print(f"Wrote {args.out / 'cpu_recipe.json'}")


if __name__ == "__main__":
    main()
