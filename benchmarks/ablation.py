"""Issue 23's ablation: each training choice trained for the same CPU budget, each post-processing choice on its model.

For every seed (two by default):

1. Fresh held-out data from the demo generator at settings the recipe was not tuned on: by default PVS of median
   diameter 1.1 mm (the demo's 1.5) and 60 to 200 per brain (the demo's 20 to 110)
   (:class:`scripts.data.demo.pvs.PVSSettings`), 12 subjects of 96 × 96 × 64 at 0.8 mm, split 5 training,
   1 validation, the rest test, as ``benchmarks/cpu_recipe.py`` splits them.
2. Each training variant: the real ``python -m monai.bundle run training`` with ``train.json`` + ``demo.json``, the
   variant's overrides, ``--seed`` the seed and ``--max_cpu_minutes`` the budget (30: the issue's).
3. Each post-processing variant on that model: the real ``run inferring`` on the test images with its overrides.
4. Every mask scored in native space by the bundle's own code: voxel Dice, VALDO detection F1 and precision,
   fragmentation (predicted components per reference PVS), extra components split into fragments and specks, and
   count agreement (ICC(A,1)) over the test cases.

With ``--extra_test N``, every model is also scored on N more subjects drawn with the same PVS setting and the seed
plus 1000 (never trained, validated or tuned on; all of them test), under the post-processing name followed by
``+N``: a count ICC over 4 test scans whose counts lie close together says little, and more scans say more.

Prints one table (variant, seed, CPU minutes, steps, the metrics) and writes every figure, the settings and the
machine to ``OUT/ablation.json``. A run keeps what an earlier one wrote there and skips the variants it finds done
(delete ``OUT`` to start over), so variants can be added later. Run alone on a quiet machine::

    python benchmarks/ablation.py                                        # 30 CPU minutes per model, two seeds
    python benchmarks/ablation.py --cpu_minutes 0.3 --seeds 1 --train base --out /tmp/ablation   # a smoke test
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from cpu_recipe import (  # puts the bundle root on sys.path
    BUDGET_LINE,
    pvs_free_cases,
    recipe_overrides,
    run_bundle,
    write_datalist,
)

from scripts.agreement import cohort_agreement
from scripts.cpu import available_cores
from scripts.data.datalist import find_pairs
from scripts.data.demo import MARKER_NAME, PVSSettings, generate_dataset
from scripts.evaluation.case_metrics import case_metrics
from scripts.evaluation.summary import by_reference, summarize
from scripts.evaluation.voxel_errors import VOXEL_ERROR_METRICS
from scripts.inference.inference_inputs import MASK_SUFFIX, PROBSEG_SUFFIX, output_stem
from scripts.masks import label_components
from scripts.training.size_rule import SIZE_CUTS_MM3, choose_min_size, detection_by_cut
from scripts.training.threshold import MIN_REFERENCE_PVS

BASE = ["augmentation#pvs_sampling=voxel", "threshold_tolerance=0", "full_res_channels=0"]
"""0.10.0's recipe, which each ablated choice changes alone: patches centred by voxel, the best validation threshold,
the library's UNet++."""
TRAINING: dict[str, list[str]] = {
    "base": BASE,
    "skeleton_recall": [*BASE, "loss_weights#skeleton_recall=0.5"],
    "cldice": [*BASE, "loss_weights#cldice=0.5"],
    "blob": [*BASE, "loss_weights#blob=0.5"],
    "component_sampling": ["augmentation#pvs_sampling=component", "threshold_tolerance=0", "full_res_channels=0"],
    "default": [],
    "cosine": ["lr_schedule=cosine"],
    "poly": ["lr_schedule=poly"],
    "full_res": ["full_res_channels=16"],
    "full_res_8": ["full_res_channels=8"],
    "plain": ["full_res_channels=0"],
}
"""Training variants: overrides of train.json + demo.json. Each loss weight is beside dice 0.5 + bce 0.5 on
:data:`BASE`; ``default`` is the demo recipe as it ships (0.11.0: component sampling, a threshold that leans to 0.5;
0.15.0: the full-resolution head of 16 channels); ``cosine`` and ``poly`` are ``default`` with the learning rate
decayed over the CPU budget (``lr_schedule``) instead of on plateaus; ``full_res`` sets the head that sees the image at
full resolution (``full_res_channels``) at 16 channels (the default since 0.15.0), ``full_res_8`` at 8, and ``plain``
removes it (the library's UNet++: the default of 0.11.0-0.14.0)."""
POSTPROCESSING: dict[str, list[str]] = {
    "stored": ["min_pvs_mm3=0"],
    "hysteresis": ["grow_threshold={half}", "min_pvs_mm3=0"],
    "min_2mm3": ["min_pvs_voxels=4", "min_pvs_mm3=0"],
    "size_auto": ["min_pvs_mm3={validation}"],
    "threshold_0.5": ["threshold=0.5", "min_pvs_mm3=0"],
    "tta_8": ["tta_axes=[0,1,2]", "min_pvs_mm3=0"],
}
"""Post-processing variants: overrides of inference.json; ``stored`` is the stored threshold alone. ``{half}`` is half
the model's stored threshold (hysteresis seeds at the threshold and grows down to half of it); ``min_pvs_voxels=4`` is
2 mm³ at 0.8 mm; ``{validation}`` the smallest PVS kept as validation chooses it (:func:`validation_cut`);
``threshold_0.5`` ignores the stored threshold; ``tta_8`` is the stored threshold on the mean of all 8 flips (the demo
recipe stores left-right mirroring: 2)."""
METRICS = ("dice", "precision", "recall", "det_f1", "det_precision", "det_recall", "det_fragmentation")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu_minutes", type=float, default=30.0, help="CPU budget of each model's training")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="data and training seeds")
    parser.add_argument("--train", default=",".join(TRAINING), help=f"training variants among {list(TRAINING)}")
    parser.add_argument("--post", default=",".join(POSTPROCESSING), help=f"among {list(POSTPROCESSING)}")
    parser.add_argument("--pvs_diameter_mm", type=float, default=1.1, help="median PVS diameter of the data")
    parser.add_argument("--pvs_count", type=int, nargs=2, default=[60, 200], help="PVS per brain, low high")
    parser.add_argument("--shape", type=int, nargs=3, default=[96, 96, 64], help="volume shape in voxels at 0.8 mm")
    parser.add_argument("--n_subjects", type=int, default=12, help="subjects: 5 train, 1 validate, the rest test")
    parser.add_argument("--extra_test", type=int, default=0, help="more test subjects per seed (seed + 1000)")
    parser.add_argument("--out", type=Path, default=Path("ablation_benchmark"), help="folder of all outputs")
    args = parser.parse_args(argv)
    args.train = [v.strip() for v in args.train.split(",") if v.strip()]
    args.post = [v.strip() for v in args.post.split(",") if v.strip()]
    for name, chosen, known in (("--train", args.train, TRAINING), ("--post", args.post, POSTPROCESSING)):
        if not chosen or set(chosen) - set(known):
            parser.error(f"{name} must be a comma-separated subset of {','.join(known)}, not {chosen}.")
    if not args.cpu_minutes > 0:
        parser.error(f"--cpu_minutes must be a positive number, not {args.cpu_minutes}.")
    return args


def score(masks: dict[str, Path], dataset_dir: Path, test: list[dict]) -> dict[str, Any]:
    """The test masks against the references in native space: metric means over cases and the count agreement."""
    rows = []
    for case in test:
        reference = nib.load(dataset_dir / case["label"])
        pred = np.asanyarray(nib.load(masks[case["id"]]).dataobj)
        rows.append(case_metrics(pred, np.asanyarray(reference.dataobj), reference.header.get_zooms()[:3]))
    summary = summarize(rows)
    counts = cohort_agreement(rows)["count"]
    sums = {k: int(sum(row[k] for row in rows)) for k in ("ref_count", "pred_count", "det_fragments", "det_specks")}
    return {
        **{m: summary[m]["mean"] for m in METRICS},
        "count_icc": counts["icc_a1"],
        "count_pearson": counts["pearson_r"],
        **sums,
        **with_pvs(rows),
        "cases": rows,
    }


def with_pvs(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of the test cases whose reference has PVS, and what was predicted in those without.

    The bundle scores a case without PVS Dice 1.0 when nothing is predicted there and 0.0 when one speck is, so each
    PVS-free case moves a mean over n cases by up to 1/n; and 0-against-0 counts widen the range an ICC is judged
    against. ``dice_with_pvs`` and ``count_icc_with_pvs`` leave those cases out (the bundle's own split,
    :func:`scripts.evaluation.summary.by_reference`, which its evaluation summary writes as ``with_pvs``);
    ``pvs_free_cases`` and ``pvs_in_pvs_free`` (predicted PVS summed over them) say what they held. Over the cases
    with PVS too: where their Dice is lost (:mod:`scripts.evaluation.voxel_errors`; ``lost_wide`` … ``lost_missed``
    add up to 1 - ``dice_with_pvs``).
    """
    split = by_reference(rows)
    kept, free = split["with_pvs"], split["pvs_free"]
    nan = float("nan")
    lost = {m.replace("dice_", ""): kept["metrics"][m]["mean"] if kept["n_cases"] else nan for m in VOXEL_ERROR_METRICS}
    return {
        **lost,
        "dice_with_pvs": kept["metrics"]["dice"]["mean"] if kept["n_cases"] else float("nan"),
        "count_icc_with_pvs": kept["agreement"]["count"]["icc_a1"],
        "pvs_free_cases": free["n_cases"],
        "pvs_in_pvs_free": free["pred_count"],
    }


def train(args: argparse.Namespace, seed: int, variant: str, data: Path, datalist: Path, work: Path) -> dict:
    """Train one variant for the budget (a fresh run) and return its CPU minutes, wall time and steps."""
    shutil.rmtree(work, ignore_errors=True)
    command = ["run", "training", "--config_file", "['configs/train.json','configs/demo.json']"]
    command += ["--ckpt_dir", str(work / "models"), "--output_dir", str(work / "eval"), "--seed", str(seed)]
    command += ["--datalist_file", str(datalist), "--dataset_dir", str(data), "--max_epochs", "100000"]
    command += ["--max_cpu_minutes", str(args.cpu_minutes), *recipe_overrides(TRAINING[variant])]
    start = time.perf_counter()
    log = run_bundle(command, work.parent / f"{work.name}_training.log")
    history = json.loads((work / "eval" / "training_history.json").read_text())
    stopped = BUDGET_LINE.search(log)
    return {
        "cpu_minutes": history["epochs"][-1].get("cpu_minutes"),
        "wall_s": time.perf_counter() - start,
        "steps": int(stopped.group(2)) if stopped else None,
        "model": json.loads((work / "models" / "model.json").read_text()),
    }


def inferring_command(work: Path) -> list[str]:
    """``run inferring`` with the demo recipe on the model in ``work``, its full-resolution head as recorded (demo.json
    sets the recipe's, which a ``plain`` model was trained without)."""
    model = json.loads((work / "models" / "model.json").read_text())
    command = ["run", "inferring", "--config_file", "['configs/inference.json','configs/demo.json']"]
    return [*command, "--ckpt_dir", str(work / "models"), "--full_res_channels", str(model.get("full_res_channels", 0))]


def validation_cut(data: Path, validation: list[dict], work: Path) -> float:
    """The smallest PVS kept (mm³) that the model's validation chose; for a model whose ``model.json`` lacks it
    (trained before 0.11.0), chosen the same way from the validation cases' probabilities written by inference."""
    model = json.loads((work / "models" / "model.json").read_text())
    if "min_pvs_mm3" in model:
        return float(model["min_pvs_mm3"])
    out = work / "validation_probabilities"
    shutil.rmtree(out, ignore_errors=True)
    images = json.dumps([str(data / case["image"]) for case in validation])
    command = inferring_command(work)
    command += ["--input_files", images, "--output_dir", str(out)]
    run_bundle([*command, "--save_probabilities", "true", "--min_pvs_mm3", "0"], work / "inference_validation.log")
    counts, reference_pvs = np.zeros((len(SIZE_CUTS_MM3), 3), dtype=np.int64), 0
    for case in validation:
        prob = nib.load(out / (output_stem(Path(case["image"])) + PROBSEG_SUFFIX))
        ref = np.asanyarray(nib.load(data / case["label"]).dataobj) > 0
        pred = np.asanyarray(prob.dataobj) >= model["threshold"]
        counts += detection_by_cut(pred, ref, prob.header.get_zooms()[:3])
        reference_pvs += label_components(ref)[1]
    return choose_min_size(SIZE_CUTS_MM3, counts, reference_pvs, MIN_REFERENCE_PVS)["min_pvs_mm3"]


def infer(
    variant: str, data: Path, test: list[dict], work: Path, validation: list[dict], name: str | None = None
) -> dict[str, Path]:
    """Segment the test images with the variant's post-processing (into ``test_NAME``, the variant's name unless
    ``name`` is given); return the mask of each case."""
    out = work / f"test_{name or variant}"
    shutil.rmtree(out, ignore_errors=True)
    images = json.dumps([str(data / case["image"]) for case in test])
    half = json.loads((work / "models" / "model.json").read_text())["threshold"] / 2
    overrides = [item.replace("{half}", f"{half:g}") for item in POSTPROCESSING[variant]]
    if any("{validation}" in item for item in overrides):
        cut = validation_cut(data, validation, work)
        overrides = [item.replace("{validation}", f"{cut:g}") for item in overrides]
    command = [*inferring_command(work), "--input_files", images, "--output_dir", str(out)]
    run_bundle([*command, *recipe_overrides(overrides)], work / f"inference_{variant}.log")
    return {case["id"]: out / (output_stem(Path(case["image"])) + MASK_SUFFIX) for case in test}


SHOWN = (
    "dice",
    "dice_with_pvs",
    "precision",
    "recall",
    "det_f1",
    "det_precision",
    "det_recall",
    "det_fragmentation",
    "count_icc",
    "count_icc_with_pvs",
    *(m.replace("dice_", "") for m in VOXEL_ERROR_METRICS),
)
"""Printed per run and as means over seeds; runs scored before 0.13.0 lack the ``lost_*`` shares (printed nan)."""


def extra_test_set(data: Path, n_subjects: int, shape: list[int], seed: int, pvs: PVSSettings) -> list[dict]:
    """``n_subjects`` held-out subjects of the demo generator with ``pvs`` and ``seed`` in ``data`` (written unless
    already there with these settings), every one a test case: those without PVS too (scored apart, as in the split).
    """
    wanted = {"seed": seed, "shape": list(shape), "n_subjects": n_subjects}
    wanted["pvs"] = {"diameter_median_mm": pvs.diameter_median_mm, "count_range": list(pvs.count_range)}
    marker = json.loads((data / MARKER_NAME).read_text()) if (data / MARKER_NAME).is_file() else {}
    if {k: marker.get(k) for k in wanted} != wanted:
        generate_dataset(data, n_subjects, list(shape), seed, overwrite=True, pvs=pvs)
    with_pvs, report = find_pairs(data)
    return sorted(with_pvs + pvs_free_cases(report.empty_masks), key=lambda case: case["id"])


def mean_over_seeds(results: dict[str, Any]) -> dict[tuple[str, str], dict[str, float]]:
    """(training variant, post-processing) -> the mean of each shown metric over its seeds, and the seeds."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for key, run in results["runs"].items():
        for post, scores in run["post"].items():
            groups.setdefault((key.rsplit("@", 1)[0], post), []).append(scores)
    return {
        group: {"seeds": len(runs), **{m: float(np.mean([r.get(m, np.nan) for r in runs])) for m in SHOWN}}
        for group, runs in groups.items()
    }


def print_table(results: dict[str, Any]) -> None:
    """One line per (training variant, post-processing, seed), then the mean over seeds."""
    head = f"{'training':<19} {'post':<11} {'seed':>5} {'CPU min':>7} {'steps':>6}"  # CPU min: used in training
    names = "  Dice DiceP  prec   rec detF1  detP  detR  frag   ICC  ICCP  wide speck narrw missd"  # P: with_pvs
    # wide … missd: the Dice of the cases with PVS lost to each kind of wrong voxel (scripts.evaluation.voxel_errors)
    print(head + names + "  fragments specks  PVS-free: cases predicted-PVS")
    for key, run in sorted(results["runs"].items()):
        variant, seed = key.rsplit("@", 1)
        for post, r in run["post"].items():
            values = " ".join(f"{r.get(m, np.nan):.3f}" for m in SHOWN)
            print(
                f"{variant:<19} {post:<11} {seed:>5} {run['cpu_minutes']:>7.2f} {run['steps'] or '':>6} {values}  "
                f"{r['det_fragments']:>9} {r['det_specks']:>6}  {r['pvs_free_cases']:>15} {r['pvs_in_pvs_free']:>13}"
            )
    print(f"\n{'training':<19} {'post':<11} {'seeds':>5} {'':>14}" + names + "  (mean over seeds)")
    for (variant, post), mean in sorted(mean_over_seeds(results).items()):
        values = " ".join(f"{mean[m]:.3f}" for m in SHOWN)
        print(f"{variant:<19} {post:<11} {mean['seeds']:>5} {'':>14} {values}")


def main() -> None:
    args = parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    report_file = args.out / "ablation.json"
    results = json.loads(report_file.read_text()) if report_file.is_file() else {"runs": {}}
    for run in results["runs"].values():  # figures added since an earlier run wrote the file, from its cases
        for scores in run["post"].values():
            scores.update(with_pvs(scores["cases"]))
    pvs = PVSSettings(args.pvs_diameter_mm, tuple(args.pvs_count))
    results["settings"] = {
        "cpu_minutes": args.cpu_minutes,
        "generator": "scripts.data.demo",
        "pvs": {"diameter_median_mm": pvs.diameter_median_mm, "count_range": list(pvs.count_range)},
        "shape": args.shape,
        "n_subjects": args.n_subjects,
        "training_variants": {k: TRAINING[k] for k in args.train},
        "postprocessing_variants": {k: POSTPROCESSING[k] for k in args.post},
    }
    results["machine"] = {"cpu": platform.processor() or platform.machine(), "cores": available_cores()}
    for seed in args.seeds:
        data = args.out / f"data_{seed}"
        wanted = {"seed": seed, "shape": args.shape, "n_subjects": args.n_subjects, "pvs": results["settings"]["pvs"]}
        marker = json.loads((data / MARKER_NAME).read_text()) if (data / MARKER_NAME).is_file() else {}
        if {k: marker.get(k) for k in wanted} != wanted:
            generate_dataset(data, args.n_subjects, args.shape, seed, overwrite=True, pvs=pvs)
        datalist_file = args.out / f"datalist_{seed}.json"
        datalist = write_datalist(data, datalist_file, seed)
        test = datalist["test"]
        extra_data = args.out / f"data_{seed}_extra"
        extra = extra_test_set(extra_data, args.extra_test, args.shape, seed + 1000, pvs) if args.extra_test else []
        for variant in args.train:
            key, work = f"{variant}@{seed}", args.out / f"{variant}_{seed}"
            run = results["runs"].get(key)
            if run is None or run.get("budget") != args.cpu_minutes or not (work / "models" / "model.pt").is_file():
                print(f"seed {seed}, {variant}: training for {args.cpu_minutes:g} CPU minutes …", flush=True)
                run = {**train(args, seed, variant, data, datalist_file, work), "budget": args.cpu_minutes, "post": {}}
                results["runs"][key] = run
            for post in args.post:
                if post not in run["post"]:
                    run["post"][post] = score(infer(post, data, test, work, datalist["validation"]), data, test)
                    report_file.write_text(json.dumps(results, indent=2, default=str, allow_nan=True) + "\n")
                name = f"{post}+{len(extra)}"
                if extra and name not in run["post"]:
                    masks = infer(post, extra_data, extra, work, datalist["validation"], name)
                    run["post"][name] = score(masks, extra_data, extra)
                    report_file.write_text(json.dumps(results, indent=2, default=str, allow_nan=True) + "\n")
    print_table(results)
    print(f"Wrote {report_file}")


if __name__ == "__main__":
    main()
