"""Does the synthetic generator keep up with training? Patches rendered per second against training steps per second.

Built from ``configs/train.json`` + ``configs/synthetic.json`` with MONAI's ConfigParser, so what is measured is what
ships: the label maps are drawn once (cached, as in training), by each generator version still drawable (2: whole
classes; 3: CSF partial volume mixed in), then

- **render**: ``RandSynthPatchesd`` and the flips (the synthetic chain's random part) alone, one process: patches/s,
  per version, on the same seeds, and version 3's maps rendered without their CSF fraction (what mixing it costs);
- **step**: one training step of the configured network (forward, Dice+BCE, backward, AdamW) on a batch of
  ``batch_size x num_samples`` such patches, with the configured precision (bf16 autocast where the CPU computes it);
- **ratio**: the seconds of rendering a step needs against the seconds the step takes. Under 1 the loader keeps up;
  with ``num_workers`` loader processes on the same cores it takes that share of the CPU from the network.

Run from the repository root, alone on the machine (another torch process makes each 10-20 times slower)::

    python benchmarks/synth_rate.py            # 8 label maps, 20 renderings, 10 steps
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

BUNDLE_ROOT = Path(__file__).resolve().parents[1] / "pvs_bundle"
sys.path.insert(0, str(BUNDLE_ROOT))

from monai.bundle import ConfigParser  # noqa: E402
from monai.data import list_data_collate  # noqa: E402

from scripts.data.synth.anatomy import GENERATOR_VERSIONS  # noqa: E402
from scripts.data.synth.dataset import SynthLabelMapd  # noqa: E402
from scripts.model.precision import resolve_precision  # noqa: E402
from scripts.model.release import cpu_name  # noqa: E402

CONFIGS = [str(BUNDLE_ROOT / "configs/train.json"), str(BUNDLE_ROOT / "configs/synthetic.json")]


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n_maps", type=int, default=8)
    parser.add_argument("--renders", type=int, default=20)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    config = ConfigParser()
    config.read_config(CONFIGS)
    config["bundle_root"] = str(BUNDLE_ROOT)
    torch.set_num_threads(config.get_parsed_content("num_threads"))
    chain = config.get_parsed_content("train#preprocessing")
    random_part = chain.transforms[1:]
    patches_per_map = config.get_parsed_content("num_samples")
    default_version = config["synth"]["generator_version"]
    shape, max_pvs = config["synth"]["shape"], config["synth"]["max_pvs"]
    SynthLabelMapd(shape, max_pvs)({"seed": 10**5})  # the template loads once per process: not timed
    map_seconds, render_seconds, drawn = {}, {}, {}

    def render(maps: list[dict]) -> tuple[float, list]:
        random_part[0].set_random_state(0)
        start = time.perf_counter()
        rendered = []
        for k in range(args.renders):
            item = maps[k % len(maps)]
            for t in random_part:
                item = t(item) if not isinstance(item, list) else [t(i) for i in item]
            rendered.append(item)
        return (time.perf_counter() - start) / (args.renders * patches_per_map), rendered

    for version in GENERATOR_VERSIONS:
        draw = SynthLabelMapd(shape, max_pvs, version)
        start = time.perf_counter()
        drawn[version] = [draw({"seed": k, "source": "synthetic"}) for k in range(args.n_maps)]
        map_seconds[version] = (time.perf_counter() - start) / args.n_maps
        render_seconds[version], rendered = render(drawn[version])
        if version == default_version:
            batches = rendered
    last = GENERATOR_VERSIONS[-1]
    whole, _ = render([{k: v for k, v in m.items() if k != "csf"} for m in drawn[last]])
    network = config.get_parsed_content("network")
    loss_fn = config.get_parsed_content("loss")
    optimizer = config.get_parsed_content("optimizer")
    dtype = {"bf16": torch.bfloat16}.get(resolve_precision(config["precision"], "cpu"))
    batch_items = config.get_parsed_content("batch_size")
    step_times = []
    for step in range(args.steps + 2):
        items = [p for b in batches[step * batch_items % len(batches) :][:batch_items] for p in b]
        batch = list_data_collate(items)
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            out = network(batch["image"])
        loss = loss_fn(out.float(), batch["label"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step >= 2:  # two warm-up steps
            step_times.append(time.perf_counter() - t0)
    step_seconds = sum(step_times) / len(step_times)
    patches_per_step = batch_items * patches_per_map
    threads = torch.get_num_threads()
    print(
        f"machine: {cpu_name()}, {threads} torch threads, torch {torch.__version__}, Python {platform.python_version()}"
    )
    print(f"precision: {dtype or torch.float32}; settings: configs/synthetic.json (patch {config['patch_size']},")
    print(f"{patches_per_step} patches a step, label maps of {config['synth']['shape']} voxels)")
    print()
    print("| what | seconds | per second |")
    print("|---|---|---|")
    for version in GENERATOR_VERSIONS:
        mark = f"version {version}" + (" (default)" if version == default_version else "")
        seconds = map_seconds[version]
        print(f"| {mark}: draw one label map (once, cached) | {seconds:.2f} | {1 / seconds:.2f} maps |")
        seconds = render_seconds[version]
        print(f"| {mark}: render one patch (random part) | {seconds:.3f} | {1 / seconds:.1f} patches |")
    print(f"| version {last}'s maps, CSF fraction left out: render one patch | {whole:.3f} | {1 / whole:.1f} patches |")
    rate = patches_per_step / step_seconds
    print(f"| one training step ({patches_per_step} patches) | {step_seconds:.2f} | {rate:.1f} patches |")
    print()
    for version in GENERATOR_VERSIONS:
        ratio = render_seconds[version] * patches_per_step / step_seconds
        print(f"version {version}: rendering a step's patches takes {ratio:.2f} x the step's time")
    print(f"mixing the CSF fraction in (version {last}, same maps): {render_seconds[last] / whole:.2f} x the rendering")


if __name__ == "__main__":
    main()
