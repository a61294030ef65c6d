"""What the sliding window of the in-training validation costs, and what it changes in the validation's figures.

A trained demo model (``--ckpt_dir``: the ``models/`` and ``eval/`` folders that ``run training`` with
``configs/train.json`` + ``configs/demo.json`` wrote) validated on its own validation cases (``eval/datalist.json``)
exactly as the training validates it (``validate#dataloader``, ``validate#inferer``, ``validate#postprocessing``,
``validate#metrics`` of the configs), once per window setting of ``--windows`` (``ROI:OVERLAP``). Each setting runs
``--repeats`` times after one warm-up; the table gives the median seconds, the ratio to the first setting and the
validation metrics (threshold 0.5, as the training's key metric). Run from the repository root, alone on the
machine::

    python benchmarks/validation_windows.py --ckpt_dir pvs_bundle/models/demo/..   # the folder holding models/, eval/
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from monai.bundle import ConfigParser
from monai.engines import SupervisedEvaluator

BUNDLE_ROOT = Path(__file__).resolve().parents[1] / "pvs_bundle"
sys.path.insert(0, str(BUNDLE_ROOT))

from scripts.model.release import cpu_name  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_dir", type=Path, required=True, help="a training's folder: models/ and eval/")
    parser.add_argument("--windows", nargs="+", default=["32:0.5", "32:0.25", "64:0.5", "64:0.25"], help="ROI:OVERLAP")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per setting, after one warm-up")
    return parser.parse_args(argv)


def evaluator(run_dir: Path, roi: int, overlap: float) -> SupervisedEvaluator:
    """The training's validation of the model in ``run_dir`` with a sliding window of ``roi``³ at ``overlap``."""
    model = json.loads((run_dir / "models" / "model.json").read_text())
    parser = ConfigParser()
    parser.read_config([str(BUNDLE_ROOT / "configs/train.json"), str(BUNDLE_ROOT / "configs/demo.json")])
    parser.update(
        {
            "bundle_root": str(BUNDLE_ROOT),
            "ckpt_dir": str(run_dir / "models"),
            "output_dir": str(run_dir / "validation_windows"),
            "datalist_file": str(run_dir / "eval" / "datalist.json"),
            "full_res_channels": int(model.get("full_res_channels", 0)),
            "sw_roi_size": [roi] * 3,
            "val_sw_overlap": overlap,
        }
    )
    parser.get_parsed_content("set_threads")
    network = parser.get_parsed_content("network")
    network.load_state_dict(torch.load(run_dir / "models" / "model.pt", map_location="cpu"))
    return SupervisedEvaluator(
        device=parser.get_parsed_content("device"),
        val_data_loader=parser.get_parsed_content("validate#dataloader"),
        network=network,
        inferer=parser.get_parsed_content("validate#inferer"),
        postprocessing=parser.get_parsed_content("validate#postprocessing"),
        key_val_metric=parser.get_parsed_content("validate#key_metric"),
        additional_metrics=parser.get_parsed_content("validate#additional_metrics"),
        amp=parser.get_parsed_content("amp"),
        amp_kwargs=parser.get_parsed_content("amp_kwargs"),
    )


def main() -> None:
    args = parse_args()
    print(f"{cpu_name()}; {torch.get_num_threads()} threads; model {args.ckpt_dir / 'models' / 'model.pt'}")
    print(f"{'window':>8} {'overlap':>7} {'seconds':>8} {'ratio':>6}  val_dice precision recall")
    first = None
    for window in args.windows:
        roi, overlap = window.split(":")
        engine = evaluator(args.ckpt_dir.resolve(), int(roi), float(overlap))
        engine.run()  # warm-up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            engine.run()
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        first = first or seconds
        m = engine.state.metrics
        print(
            f"{roi + '³':>8} {float(overlap):>7.2f} {seconds:>8.1f} {seconds / first:>6.2f}  "
            f"{m['val_dice']:.4f}   {m['val_precision']:.4f}    {m['val_recall']:.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
