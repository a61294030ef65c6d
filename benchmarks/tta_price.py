"""The price of test-time augmentation: flip subsets of 1, 2, 4 and 8 passes, side by side, on held-out data.

Each model is evaluated by the bundle's own ``run evaluating`` (as ``benchmarks/generalisation.py`` does it, on the
same held-out sets: the demo generator at a seed no training used) once per flip subset:

- 1 pass: ``--tta none``;
- 2 passes: ``--tta mirror --tta_axes [0]`` (the image and its left-right mirror: axis 0 after the preprocessing's
  RAS orientation);
- 4 passes: ``--tta_axes [0,1]`` (left-right and front-back, and both);
- 8 passes: ``--tta_axes [0,1,2]`` (every flip; what ``tta: mirror`` did before 0.8.0).

One table per model: mean voxel Dice and VALDO detection F1 over the sets, the evaluation's wall seconds summed
over the sets, and the gains over one pass per extra second. Printed with the machine and written to
``OUT/tta_price.md`` and ``.json``. Run from the repository root, alone on the machine (timings)::

    python benchmarks/tta_price.py --model demo=configs/demo.json:models/demo --contrasts T2w \\
        --voxel_sizes 0.8 1.0 --n_subjects 3 --out tta_price
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import generalisation as g

VARIANTS: dict[str, list[str]] = {
    "1 pass": ["--tta", "none"],
    "2 passes (left-right)": ["--tta", "mirror", "--tta_axes", "[0]"],
    "4 passes": ["--tta", "mirror", "--tta_axes", "[0,1]"],
    "8 passes": ["--tta", "mirror", "--tta_axes", "[0,1,2]"],
}


def mean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def price(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Evaluate every model on every set with every flip subset; return one row per model and subset."""
    sets = [(held_out, *g.prepare_set(args, held_out)) for held_out in args.sets]
    rows = []
    for model in args.models:
        for variant, extra in VARIANTS.items():
            runs = []
            for held_out, dataset_dir, datalist in sets:
                work = args.work_dir / "tta" / variant.split()[0]
                runs.append({"set": held_out.name, **g.evaluate(model, held_out, dataset_dir, datalist, work, extra)})
            failed = [r for r in runs if "error" in r]
            if failed:
                raise SystemExit(f"{model.name}, {variant}: {failed[0]['error']} (log {failed[0]['log']})")
            rows.append(
                {
                    "model": model.name,
                    "variant": variant,
                    "dice": mean([r["dice_mean"] for r in runs]),
                    "det_f1": mean([r["det_f1_mean"] for r in runs]),
                    "seconds": sum(r["seconds"] for r in runs),
                    "sets": [{k: v for k, v in r.items() if k != "cases"} for r in runs],
                }
            )
    return rows


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace, host: dict[str, Any]) -> str:
    """The table: per model, each subset against one pass."""
    lines = [
        f"Held-out data: demo generator, seed {args.seed}, {args.n_subjects} subjects per set, sets "
        f"{', '.join(s.name for s in args.sets)}; machine: {host['cpu']} ({host['cpu_cores']} cores; "
        f"{host['cpu_bf16']}), torch {host['torch']}; seconds: wall time of the evaluation runs summed over the sets.",
        "",
        "| model | test-time flips | Dice | det F1 | seconds | Dice gain / extra minute | F1 gain / extra minute |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        base = next(r for r in rows if r["model"] == row["model"] and r["variant"] == "1 pass")
        extra_minutes = (row["seconds"] - base["seconds"]) / 60
        gains = ["—", "—"]
        if row is not base and extra_minutes > 0:
            gains = [f"{(row[k] - base[k]) / extra_minutes:+.4f}" for k in ("dice", "det_f1")]
        lines.append(
            f"| {row['model']} | {row['variant']} | {g.number(row['dice'])} | {g.number(row['det_f1'])} | "
            f"{row['seconds']:.0f} | {gains[0]} | {gains[1]} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = g.parse_args(argv)
    host = g.machine()
    rows = price(args)
    text = markdown(rows, args, host)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tta_price.md").write_text(text)
    (args.out / "tta_price.json").write_text(json.dumps({"machine": host, "rows": rows}, indent=2, default=str) + "\n")
    print(text)


if __name__ == "__main__":
    main()
