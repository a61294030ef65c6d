"""Release a trained model as the bundle's shipped weights: half precision, hashed, described.

``python -m scripts.model.release --ckpt_dir D/models --history D/eval/training_history.json --out_dir
models --command "…"`` writes ``out_dir/model.pt`` (the best model's state dict in float16:
half the size; inference loads it into the float32 network) and ``out_dir/model.json``: the training's settings and
model information (contrasts, generator), the sliding window inference runs it with (``sw_roi_size``,
``sw_overlap``: inference.json reads them, like the network settings), plus ``sha256`` of the released file (checked
before every load),
``weights_dtype``, ``licence`` and ``training`` (the command, its epochs and CPU minutes, the best validation
metrics, the machine, and the runs it continued from). A model released from a run that warm-started from an
earlier release adds that release's training to ``training.continued_from``, so the total CPU time stays on record.
``--min_pvs_mm3 auto`` (or a number) stores it under ``defaults``: inference and evaluation then apply it unless told
otherwise (:func:`scripts.model.model_file.release_default`), so the model runs as its figures were measured.
"""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from scripts.io import atomic_write, atomic_write_json, sha256_file
from scripts.model.model_file import read_settings, settings_file
from scripts.model.network import check_patch_size

WEIGHTS_LICENCE = "Apache-2.0 (the weights, like the code; trained on synthetic data only)"


def resolve_default_size(value: str | float) -> str | float:
    """``"auto"`` or a volume in mm³ >= 0 (a command line's string read as a number); else ValueError naming it."""
    if value == "auto":
        return value
    try:
        volume = float(value)
    except (TypeError, ValueError):
        volume = -1.0
    if volume < 0.0:
        raise ValueError(f"--min_pvs_mm3 must be 'auto' or a number >= 0, not {value!r}.")
    return volume


def cpu_name() -> str:
    """The CPU's model name and whether it computes bfloat16 (AMX / AVX512-BF16), for the record."""
    name, flags = platform.processor() or platform.machine(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name in ("", platform.machine(), platform.processor()):
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = line
    except OSError:
        pass
    bf16 = [unit for unit in ("amx_bf16", "avx512_bf16") if unit in flags.split()]
    return f"{name} ({', '.join(bf16) if bf16 else 'no bf16 units'})"


def release(
    ckpt_dir: str | Path,
    history_file: str | Path,
    out_dir: str | Path,
    command: str,
    continued_from: str | Path | None = None,
    sw_roi_size: Sequence[int] = (64, 64, 64),
    sw_overlap: float = 0.125,
    min_pvs_mm3: str | float | None = None,
) -> dict[str, Any]:
    """Write the released model and its description; return the description.

    Args:
        ckpt_dir: the training's checkpoint folder (``model.pt`` and ``model.json``).
        history_file: its ``training_history.json``.
        out_dir: where the release goes (``model.pt``, ``model.json``).
        command: the command that trained it, as run.
        continued_from: the ``model.json`` of the release this training warm-started from, or None.
        sw_roi_size: the sliding window inference runs the model with (multiples of 32; 64³ measured for the
            shipped model in 0.7.1: 4.6 times faster than 32³ on a CPU).
        sw_overlap: the windows' overlap (0.125 since 0.20.0: the shipped model's held-out Dice within 0.003 of
            0.25 on all 12 sets of seed 9005, whole command 1.09 times faster; ``benchmarks/end_to_end.py``).
        min_pvs_mm3: the smallest-PVS setting inference and evaluation use by default (``"auto"``: the one training's
            validation chose and stored), or None to leave their default (0, every PVS kept).

    Returns:
        The description written to ``out_dir/model.json``.

    Raises:
        FileNotFoundError: when the checkpoint, its settings or the history is missing.
        ValueError: when ``min_pvs_mm3`` is neither ``"auto"`` nor a number >= 0 (before anything is written).
    """
    defaults = {"min_pvs_mm3": resolve_default_size(min_pvs_mm3)} if min_pvs_mm3 is not None else {}
    source = Path(ckpt_dir) / "model.pt"
    settings = read_settings(source)
    if settings is None:
        raise FileNotFoundError(
            f"{settings_file(source)} must exist beside {source}: release a model the bundle trained."
        )
    history = json.loads(Path(history_file).read_text())
    best_epoch = history["best"]["epoch"]
    best = next(row for row in history["epochs"] if row["epoch"] == best_epoch)
    state = torch.load(source, map_location="cpu", weights_only=True)
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    out = Path(out_dir)
    target = atomic_write(out / "model.pt", lambda p: torch.save(half, p))
    earlier = []
    if continued_from is not None:
        previous = json.loads(Path(continued_from).read_text()).get("training", {})
        earlier = [*previous.get("continued_from", []), {k: v for k, v in previous.items() if k != "continued_from"}]
    last = history["epochs"][-1]
    training = {
        "command": command,
        "epochs": last["epoch"],
        "cpu_minutes": last.get("cpu_minutes"),
        "best_epoch": best_epoch,
        "best_validation": {k: round(v, 4) for k, v in best.items() if k.startswith("val_")},
        "machine": cpu_name(),
        "torch": torch.__version__,
        "continued_from": earlier,
    }
    total = sum(float(run.get("cpu_minutes") or 0.0) for run in [*earlier, training])
    description = {
        **settings,
        "sw_roi_size": check_patch_size(sw_roi_size, "sw_roi_size"),
        "sw_overlap": float(sw_overlap),
        **({"defaults": defaults} if defaults else {}),
        "weights_dtype": "float16",
        "sha256": sha256_file(target),
        "licence": WEIGHTS_LICENCE,
        "training": training,
        "total_cpu_hours": round(total / 60.0, 2),
    }
    atomic_write_json(out / "model.json", description)
    return description


def main() -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_dir", required=True)
    parser.add_argument("--history", required=True)
    parser.add_argument("--out_dir", default="models")
    parser.add_argument("--command", required=True)
    parser.add_argument("--continued_from", default=None)
    parser.add_argument("--sw_roi_size", type=int, nargs=3, default=[64, 64, 64])
    parser.add_argument("--sw_overlap", type=float, default=0.125)
    parser.add_argument("--min_pvs_mm3", default=None, help="'auto' or mm³: the size rule applied by default")
    args = parser.parse_args()
    description = release(
        args.ckpt_dir,
        args.history,
        args.out_dir,
        args.command,
        args.continued_from,
        args.sw_roi_size,
        args.sw_overlap,
        args.min_pvs_mm3,
    )
    print(json.dumps({k: description[k] for k in ("sha256", "total_cpu_hours", "training")}, indent=2))


if __name__ == "__main__":
    from scripts.errors import install

    install()
    main()
