"""Peak memory of inference's postprocessing on one HCP-A-sized volume: aliases (the bundle) against deep copies.

``configs/inference.json`` turns the network's output into probabilities, inverts them and the head mask (made
from the image) to the input's grid, keeps the probabilities beside the thresholded mask and writes both. 0.1.0
took the image for the head mask and kept the probabilities with ``CopyItemsd`` (a deep copy of a volume each);
0.2.0 names the same tensors twice (``scripts.data.transforms.Aliasd``), which is safe because the transforms after
it make new tensors. Both variants run the config's own
preprocessing and postprocessing, in a fresh child process each, on the same image: an int16 .nii.gz written at
``--input_spacing`` so that the network's grid is 208 x 300 x 320 at 0.8 mm and the inversion really resamples.
The network is replaced by fixed random logits of the right shape (what is measured is the postprocessing);
the figure is the rise of the peak resident memory (``VmHWM``, reset to the current RSS just before) during the
postprocessing, above what the process held with the preprocessed image and the logits.

Run from the repository root::

    python benchmarks/postprocessing_memory.py      # ~1 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

BUNDLE_ROOT = Path(__file__).resolve().parents[1] / "pvs_bundle"
sys.path.insert(0, str(BUNDLE_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from monai.bundle import ConfigParser  # noqa: E402
from monai.transforms import CopyItemsd  # noqa: E402
from preprocessing_memory import peak_rss_mib, run_variants  # noqa: E402

from scripts.data.transforms import Aliasd  # noqa: E402

CONFIG = BUNDLE_ROOT / "configs" / "inference.json"
VARIANTS = ("CopyItemsd (0.1.0)", "Aliasd (0.2.0)")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input_spacing", type=float, default=1.0, help="voxel size of the written input, mm")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # set in the child processes
    parser.add_argument("--data_dir", help=argparse.SUPPRESS)
    return parser.parse_args()


def measure(args: argparse.Namespace) -> dict[str, float]:
    """In a child process: preprocess the image, fake the logits, time and measure the postprocessing."""
    parser = ConfigParser()
    parser.read_config(str(CONFIG))
    postprocessing = parser.get_parsed_content("postprocessing")
    if args.variant == VARIANTS[0]:
        postprocessing.transforms = tuple(
            CopyItemsd(t.keys, names=t.names) if isinstance(t, Aliasd) else t for t in postprocessing.transforms
        )
    case = json.loads((Path(args.data_dir) / "case.json").read_text())
    item = parser.get_parsed_content("preprocessing")({"image": case["image"]})
    pred = item["image"].clone()  # the network's output carries the input's metadata
    pred.copy_(torch.randn(pred.shape, generator=torch.Generator().manual_seed(0)))
    item["pred"] = pred
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux)
    before = peak_rss_mib()
    start = time.perf_counter()
    out = postprocessing(item)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "rss_before_mib": before,
        "peak_rss_mib": peak_rss_mib(),
        "rise_mib": peak_rss_mib() - before,
        "network_grid": list(item["image"].shape[1:]),
        "output_grid": list(out["pred"].shape[1:]),
        "prob_is_probability": bool(((out["prob"] > 0.01) & (out["prob"] < 0.99)).any()),
    }


def main() -> None:
    args = parse_args()
    if args.variant is not None:
        print(json.dumps(measure(args)))
        return
    results, _ = run_variants(__file__, list(VARIANTS), args.input_spacing, 0.8)
    first = results[VARIANTS[0]]
    network_grid, input_grid = ("x".join(map(str, first[key])) for key in ("network_grid", "output_grid"))
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs\nnetwork grid {network_grid} at 0.8 mm -> input "
        f"grid {input_grid} at {args.input_spacing:g} mm; inference.json's postprocessing; each variant in its own "
        "process\n"
    )
    print(f"{'head image, probabilities':<28}{'seconds':>9}{'RSS before MiB':>16}{'peak rise MiB':>15}{'vs copy':>9}")
    for variant, result in results.items():
        ratio = result["rise_mib"] / first["rise_mib"]
        print(
            f"{variant:<28}{result['seconds']:>9.1f}{result['rss_before_mib']:>16.0f}{result['rise_mib']:>15.0f}"
            f"{ratio:>8.2f}x"
        )
    if not all(result["prob_is_probability"] for result in results.values()):
        raise SystemExit("the kept probabilities were thresholded: the alias is not safe here")


if __name__ == "__main__":
    main()
