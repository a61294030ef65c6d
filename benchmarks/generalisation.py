"""Generalisation of trained models to held-out contrasts and voxel sizes, scored by the bundle's own evaluation.

1. Held-out data: BIDS datasets from the demo generator (``scripts.data.demo``: MNI152 anatomy warped per
   subject, straight capsule PVS), not the domain-randomised generator the pretrained model learns from, at a seed no
   training used (default 9001; the demo dataset's is 0), one per contrast (T2w, T1w, FLAIR;
   ``scripts.data.demo.contrasts``) and voxel size (0.8, 1.0, 1.2 mm isotropic, 0.8 x 0.8 x 1.6 mm), ``--n_subjects``
   each, at the demo's field of view (96 x 128 x 112 voxels of 0.8 mm, 76.8 x 102.4 x 89.6 mm). "0.8" is the demo's
   own grid (0.799998 x 0.8 x 0.8 mm, as ds005595). A seed gives the same anatomy and PVS in every set: only contrast
   and grid differ. The PVS are drawn with the demo's own settings (``PVSSettings()``: 1.5 mm median diameter,
   20–110 per brain; ``benchmarks/ablation.py`` varies them), so they differ from the demo's only by the seed. About
   one subject in six has no PVS (as in the demo); it is scored too (Dice 1 or 0 by the bundle's empty-mask
   conventions, detection F1 NaN, left out of the mean), and the table gives Dice over the subjects with PVS beside.
2. Each ``--model NAME=CONFIG_OVERLAYS:CKPT_DIR`` (overlays comma-separated, relative to pvs_bundle/) is evaluated on
   every set with ``python -m monai.bundle run evaluating --config_file "['configs/train.json',<overlays>,
   'configs/evaluate.json']"`` from pvs_bundle/, with a datalist that lists every subject under ``test`` (written
   here, so the evaluation needs no split) and ``--contrasts "['<contrast>']"``. Evaluation resamples to the model's
   pixdim, predicts, and scores in each label's own grid.
3. One table: model x contrast x voxel size -> voxel Dice (mean ± sd over cases; then Dice, voxel precision and
   recall over the cases with PVS), VALDO detection F1 (mean over the cases with PVS), ICC(A,1) of the per-case
   PVS counts (the evaluation's cohort agreement), and wall seconds of the evaluation run (process start, model load
   and data check included). Printed as markdown with the machine, and
   written to ``OUT/generalisation.md`` and ``OUT/generalisation.json`` (with each run's per-case rows).

Run from the repository root (datasets are reused when their settings match; evaluation runs always rerun)::

    python benchmarks/generalisation.py --model pretrained=configs/pretrained.json:models \\
        --model demo=configs/demo.json:models/demo --out generalisation_benchmark
    python benchmarks/generalisation.py --quick --model demo=configs/demo.json:models/demo    # a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

BUNDLE_ROOT = Path(__file__).resolve().parents[1] / "pvs_bundle"
sys.path.insert(0, str(BUNDLE_ROOT))  # scripts/ as monai.bundle reaches it: from the bundle root

from scripts.agreement import cohort_agreement  # noqa: E402
from scripts.data.demo import DEMO_SHAPE, ensure_demo_dataset  # noqa: E402
from scripts.data.demo.contrasts import CONTRASTS, check_voxel_size  # noqa: E402
from scripts.evaluation.summary import by_reference  # noqa: E402
from scripts.evaluation.voxel_errors import VOXEL_ERROR_METRICS  # noqa: E402

DEFAULT_SEED = 9001
DEMO_SEED = 0
VOXEL_SIZES = ("0.8", "1.0", "1.2", "0.8x0.8x1.6")
QUICK = {"contrasts": ["T2w"], "voxel_sizes": ["1.0"], "n_subjects": 2}
SUMMARY_FILE = "comprehensive_test_metrics.json"
PER_CASE_FILE = "test_per_case_metrics.json"
MODEL_SPEC = re.compile(r"(?P<name>[A-Za-z0-9_.-]+)=(?P<overlays>[^:]*):(?P<ckpt>.+)")


@dataclass(frozen=True)
class Model:
    """A model to evaluate: its name in the table, its config overlays and its checkpoint folder."""

    name: str
    overlays: tuple[str, ...]
    ckpt_dir: Path


@dataclass(frozen=True)
class HeldOutSet:
    """One held-out dataset: a contrast and a voxel size (None: the demo's own 0.8 mm grid)."""

    contrast: str
    voxel_label: str
    voxel_size_mm: tuple[float, float, float] | None

    @property
    def name(self) -> str:
        return f"{self.contrast}_{self.voxel_label}mm"


def parse_voxel_size(text: str) -> tuple[str, tuple[float, float, float] | None]:
    """``"1.0"`` or ``"0.8x0.8x1.6"`` -> (label, voxel size); ``"0.8"`` is the demo's own grid (None).

    Raises:
        ValueError: if the text is not one number or three joined by ``x``, or a size the generator refuses.
    """
    parts = text.lower().split("x")
    try:
        sizes = check_voxel_size(tuple(float(p) for p in (parts * 3 if len(parts) == 1 else parts)))
    except ValueError as err:
        raise ValueError(
            f"--voxel_sizes must be one number or three joined by x (0.8x0.8x1.6), not {text!r}: {err}"
        ) from None
    label = "x".join(
        f"{s:g}" + (".0" if s.is_integer() else "") for s in (sizes[:1] if len(set(sizes)) == 1 else sizes)
    )
    return label, None if sizes == (0.8, 0.8, 0.8) else sizes


def parse_model(spec: str) -> Model:
    """``NAME=OVERLAY[,OVERLAY...]:CKPT_DIR`` (paths relative to pvs_bundle/ or absolute) -> a checked Model.

    Raises:
        ValueError: if the spec is malformed, an overlay is missing, or the checkpoint folder has no model.pt.
    """
    match = MODEL_SPEC.fullmatch(spec)
    if match is None:
        raise ValueError(
            f"--model must be NAME=CONFIG_OVERLAYS:CKPT_DIR (e.g. demo=configs/demo.json:models/demo), not {spec!r}"
        )
    overlays = tuple(o.strip() for o in match["overlays"].split(",") if o.strip())
    missing = [o for o in overlays if not (BUNDLE_ROOT / o).is_file()]
    if missing:
        raise ValueError(f"--model {spec}: config overlay(s) {missing} do not exist under {BUNDLE_ROOT}")
    ckpt_dir = (BUNDLE_ROOT / match["ckpt"]).resolve()
    if not (ckpt_dir / "model.pt").is_file():
        raise ValueError(f"--model {spec}: {ckpt_dir / 'model.pt'} does not exist; train the model or fix the path")
    return Model(match["name"], overlays, ckpt_dir)


def overrides(pairs: list[str]) -> list[str]:
    """``["tta=none"]`` -> ``["--tta", "none"]``.

    Raises:
        ValueError: on a pair without ``=``.
    """
    out = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set must be KEY=VALUE, not {pair!r}")
        out += [f"--{key}", value]
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        required=True,
        metavar="NAME=CONFIG_OVERLAYS:CKPT_DIR",
        help="a model to evaluate (repeatable), e.g. pretrained=configs/pretrained.json:models",
    )
    parser.add_argument("--contrasts", nargs="+", default=list(CONTRASTS), choices=list(CONTRASTS))
    parser.add_argument("--voxel_sizes", nargs="+", default=list(VOXEL_SIZES), help="mm: one number or AxBxC")
    parser.add_argument("--n_subjects", type=int, default=6, help="subjects per held-out set")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"generator seed (not the demo's {DEMO_SEED})")
    parser.add_argument("--shape", type=int, nargs=3, default=list(DEMO_SHAPE), help="field of view, voxels of 0.8 mm")
    parser.add_argument("--work_dir", type=Path, default=Path("/tmp/pvs_generalisation"), help="datasets and runs")
    parser.add_argument("--out", type=Path, default=Path("generalisation_benchmark"), help="folder of the tables")
    parser.add_argument("--quick", action="store_true", help="smoke run: T2w at 1.0 mm, 2 subjects")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="an override for every evaluation (tta=none)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.contrasts, args.voxel_sizes, args.n_subjects = (
            QUICK["contrasts"],
            QUICK["voxel_sizes"],
            QUICK["n_subjects"],
        )
    if args.seed == DEMO_SEED:
        parser.error(f"--seed must not be {DEMO_SEED}: that is the demo dataset's seed, the demo model's training data")
    if not 1 <= args.n_subjects <= 999:
        parser.error(f"--n_subjects must be in [1, 999], not {args.n_subjects}")
    try:
        args.models = [parse_model(spec) for spec in args.model]
        voxels = [parse_voxel_size(v) for v in args.voxel_sizes]
    except ValueError as err:
        parser.error(str(err))
    names = [m.name for m in args.models]
    if len(set(names)) != len(names):
        parser.error(f"--model names must be unique, not {names}")
    args.sets = [
        HeldOutSet(c, label, size) for c in dict.fromkeys(args.contrasts) for label, size in dict(voxels).items()
    ]
    return args


def write_test_datalist(dataset_dir: Path, datalist_file: Path, contrast: str) -> list[dict]:
    """List every subject of a held-out set under ``test``, those without PVS too; return the cases.

    Raises:
        ValueError: when the dataset holds no image of the contrast, or an image has no mask.
    """
    cases = []
    for image in sorted(dataset_dir.glob(f"sub-*/anat/sub-*_{contrast}.nii.gz")):
        subject = image.parent.parent.name
        label = Path("derivatives", "mask", subject, f"{subject}_desc-mask_PVS.nii.gz")
        if not (dataset_dir / label).is_file():
            raise ValueError(f"{image} has no mask {dataset_dir / label}")
        cases.append(
            {"image": str(image.relative_to(dataset_dir)), "label": str(label), "id": subject, "subject": subject}
        )
    if not cases:
        raise ValueError(f"{dataset_dir} holds no {contrast} image")
    datalist_file.parent.mkdir(parents=True, exist_ok=True)
    datalist_file.write_text(json.dumps({"training": [], "validation": [], "test": cases}, indent=4) + "\n")
    return cases


def prepare_set(args: argparse.Namespace, held_out: HeldOutSet) -> tuple[Path, Path]:
    """Generate (or reuse) one held-out dataset and its all-test datalist; return their paths."""
    folder = args.work_dir / "sets" / held_out.name
    dataset_dir = folder / "data"
    ensure_demo_dataset(
        dataset_dir,
        n_subjects=args.n_subjects,
        shape=args.shape,
        seed=args.seed,
        contrast=held_out.contrast,
        voxel_size_mm=held_out.voxel_size_mm,
    )
    datalist_file = folder / "datalist.json"
    write_test_datalist(dataset_dir, datalist_file, held_out.contrast)
    return dataset_dir, datalist_file


def evaluate(
    model: Model, held_out: HeldOutSet, dataset_dir: Path, datalist_file: Path, work_dir: Path, extra: list[str]
) -> dict:
    """Run the bundle's evaluation of one model on one set; return its figures (or the error and the log).

    The datalist lists the images explicitly, and ``--contrasts`` names the set's contrast for a bundle whose
    evaluation filters images by contrast (unused by one that does not).
    """
    output_dir = work_dir / "runs" / model.name / held_out.name
    log_file = work_dir / "runs" / model.name / f"{held_out.name}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    for stale in (SUMMARY_FILE, PER_CASE_FILE):  # a failed run must not report an earlier run's figures
        (output_dir / stale).unlink(missing_ok=True)
    configs = ["configs/train.json", *model.overlays, "configs/evaluate.json"]
    command = [sys.executable, "-m", "monai.bundle", "run", "evaluating", "--config_file", repr(configs)]
    command += ["--dataset_dir", str(dataset_dir), "--datalist_file", str(datalist_file)]
    command += ["--ckpt_dir", str(model.ckpt_dir), "--output_dir", str(output_dir)]
    command += ["--contrasts", repr([held_out.contrast]), *extra]
    start = time.perf_counter()
    proc = subprocess.run(
        command, cwd=BUNDLE_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    log_file.write_text(" ".join(command) + "\n\n" + proc.stdout + proc.stderr)
    if proc.returncode != 0 or not (output_dir / SUMMARY_FILE).is_file():
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"exit {proc.returncode}: {tail[0]}", "log": str(log_file), "seconds": seconds}
    return {**read_figures(output_dir), "seconds": seconds, "log": str(log_file), "output_dir": str(output_dir)}


def read_figures(output_dir: Path) -> dict[str, Any]:
    """Dice, detection F1 and the count ICC(A,1) of one evaluation's summary, with its per-case rows.

    Dice is given over all cases and over those with reference PVS (with their voxel precision and recall, and where
    their Dice is lost: a case without PVS scores Dice 1 or 0, :func:`scripts.evaluation.summary.by_reference`).

    The ICC is the evaluation's own cohort agreement; a summary without one (an older bundle) gets it computed
    from the per-case counts with :func:`scripts.agreement.cohort_agreement`.
    """
    summary = json.loads((output_dir / SUMMARY_FILE).read_text())
    rows = json.loads((output_dir / PER_CASE_FILE).read_text())
    agreement = summary.get("agreement") or cohort_agreement(rows)
    metrics = summary["metrics"]
    kept = summary.get("with_pvs") or by_reference(rows)["with_pvs"]  # an older bundle's summary has no split
    return {
        "n_cases": summary.get("n_cases", len(rows)),
        "dice_mean": metrics["dice"]["mean"],
        "dice_sd": metrics["dice"]["std"],
        "n_with_pvs": kept["n_cases"],
        "dice_with_pvs": kept["metrics"]["dice"]["mean"] if kept["n_cases"] else math.nan,
        "precision_with_pvs": kept["metrics"]["precision"]["mean"] if kept["n_cases"] else math.nan,
        "recall_with_pvs": kept["metrics"]["recall"]["mean"] if kept["n_cases"] else math.nan,
        **{  # where their Dice is lost (scripts.evaluation.voxel_errors); an older bundle's summary has none
            f"{name}_with_pvs": kept["metrics"][name]["mean"] if name in kept["metrics"] else math.nan
            for name in VOXEL_ERROR_METRICS
        },
        "det_f1_mean": metrics["det_f1"]["mean"],
        "det_f1_n": metrics["det_f1"]["n"],
        "count_icc_a1": agreement["count"]["icc_a1"],
        "icc_source": "evaluation summary" if summary.get("agreement") else "computed from per-case counts",
        "cases": rows,
    }


def cpu_model_and_bf16() -> tuple[str, str]:
    """The CPU model name and its native bfloat16 support (AVX512-BF16, AMX), from /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), "unknown"
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    found = [name for flag, name in (("avx512_bf16", "AVX512-BF16"), ("amx_bf16", "AMX-BF16")) if flag in flags]
    return model or platform.machine(), ", ".join(found) or "neither AVX512-BF16 nor AMX"


def machine() -> dict[str, Any]:
    cpu, bf16 = cpu_model_and_bf16()
    return {
        "cpu": cpu,
        "cpu_bf16": bf16,
        "cpu_cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def number(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown(results: list[dict], settings: dict, host: dict) -> str:
    """The table, with what generated the data and the machine it ran on."""
    device = f"GPU {host['gpu']}" if host["gpu"] else "CPU"
    lines = [
        f"Held-out data: demo generator (scripts/data/demo_data.py: MNI152 anatomy, capsule PVS), seed "
        f"{settings['seed']}, {settings['n_subjects']} subjects per set (all scored), field of view "
        f"{settings['shape']} voxels of 0.8 mm; voxel 0.8 is the demo's own 0.799998 x 0.8 x 0.8 mm grid, the "
        "others cover the same field of view, the anatomy pre-blurred for the larger voxel. Evaluation: "
        f"`monai.bundle run evaluating` (train.json + overlays + evaluate.json) on {device}; machine: {host['cpu']} "
        f"({host['cpu_cores']} cores; {host['cpu_bf16']}), torch {host['torch']}. Dice: mean ± sd over cases; "
        "with PVS: Dice, voxel precision / recall over the cases whose reference has PVS (n), and the Dice they lose "
        "to PVS drawn too wide or long / too thin or short / specks / PVS missed (they add up to 1 - Dice); "
        "detection F1 (VALDO): mean over cases with PVS; ICC(A,1) of per-case PVS counts; seconds: wall time of "
        "the evaluation run."
        + (f" Overrides: {', '.join(settings['overrides'])}." if settings.get("overrides") else ""),
        "",
        "| model | contrast | voxel (mm) | cases | Dice | with PVS: Dice (n) | precision / recall | "
        "Dice lost: wide / thin / specks / missed | det F1 | count ICC(A,1) | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        head = f"| {r['model']} | {r['contrast']} | {r['voxel_mm']} |"
        if "error" in r:
            lines.append(f"{head} failed: {r['error']} (log {r['log']}) | | | | | | | {r['seconds']:.0f} |")
            continue
        dice = f"{number(r['dice_mean'])} ± {number(r['dice_sd'])}"
        with_pvs = f"{number(r['dice_with_pvs'])} ({r['n_with_pvs']})"
        voxels = f"{number(r['precision_with_pvs'], 2)} / {number(r['recall_with_pvs'], 2)}"
        order = ("dice_lost_wide", "dice_lost_narrow", "dice_lost_specks", "dice_lost_missed")
        lost = " / ".join(number(r.get(f"{name}_with_pvs", math.nan), 2) for name in order)
        lines.append(
            f"{head} {r['n_cases']} | {dice} | {with_pvs} | {voxels} | {lost} | {number(r['det_f1_mean'])} "
            f"(n={r['det_f1_n']}) | {number(r['count_icc_a1'])} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.work_dir, args.out = args.work_dir.resolve(), args.out.resolve()
    settings = {
        "generator": "scripts.data.demo_data",
        "seed": args.seed,
        "n_subjects": args.n_subjects,
        "shape": list(args.shape),
        "sets": [{"name": s.name, "contrast": s.contrast, "voxel_size_mm": s.voxel_size_mm} for s in args.sets],
        "models": [{"name": m.name, "overlays": list(m.overlays), "ckpt_dir": str(m.ckpt_dir)} for m in args.models],
        "overrides": list(args.set),
    }
    results = []
    for held_out in args.sets:
        print(f"{held_out.name}: {args.n_subjects} subjects (seed {args.seed}) …", flush=True)
        dataset_dir, datalist_file = prepare_set(args, held_out)
        for model in args.models:
            run = evaluate(model, held_out, dataset_dir, datalist_file, args.work_dir, overrides(args.set))
            outcome = run.get("error") or f"Dice {number(run['dice_mean'])}, det F1 {number(run['det_f1_mean'])}"
            print(f"  {model.name}: {outcome} ({run['seconds']:.0f} s)", flush=True)
            results.append(
                {"model": model.name, "contrast": held_out.contrast, "voxel_mm": held_out.voxel_label, **run}
            )
    host = machine()
    table = markdown(results, settings, host)
    print("\n" + table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "generalisation.md").write_text(table)
    report = {"settings": settings, "machine": host, "results": results}
    plain = json.loads(json.dumps(report, default=str), parse_constant=lambda constant: None)  # NaN: null
    (args.out / "generalisation.json").write_text(json.dumps(plain, indent=4, allow_nan=False) + "\n")
    print(f"Wrote {args.out / 'generalisation.md'} and {args.out / 'generalisation.json'}")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
