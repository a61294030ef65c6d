"""Plots of the training history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from scripts.io import atomic_write

plt.switch_backend("Agg")  # no display needed (a call, not an import-time setting, so every import stays on top)


def plot_history(history: dict[str, Any], path: str | Path, dpi: int = 120) -> Path:
    """Draw the loss, validation metric and learning-rate curves of a training history.

    Args:
        history: the dict written by ``TrainingHistoryHandler`` (``epochs``: list of rows).
        path: where to save the PNG (written atomically).
        dpi: resolution of the figure.

    Returns:
        The path written.
    """
    rows = history["epochs"]
    fig, (ax_loss, ax_metric, ax_lr) = plt.subplots(1, 3, figsize=(15, 4))
    train = [(r["epoch"], r["train_loss"]) for r in rows if r.get("train_loss") is not None]
    val = [(r["epoch"], r["val_loss"]) for r in rows if r.get("val_loss") is not None]
    if train:
        ax_loss.plot(*zip(*train, strict=True), label="training loss")
    if val:
        ax_loss.plot(*zip(*val, strict=True), marker="o", label="validation loss")
    ax_loss.set(xlabel="epoch", ylabel="Dice + BCE loss", title="Loss")
    ax_loss.legend(loc="upper right")
    names = sorted({k for r in rows for k in r if k.startswith("val_") and k != "val_loss"})
    for name in names:
        points = [(r["epoch"], r[name]) for r in rows if r.get(name) is not None]
        ax_metric.plot(*zip(*points, strict=True), marker="o", label=name)
    ax_metric.set(xlabel="epoch", ylabel="value", ylim=(0, 1), title="Validation metrics")
    if names:
        ax_metric.legend(loc="lower right")
    lrs = [(r["epoch"], r["lr"]) for r in rows if r.get("lr") is not None]
    if lrs:
        ax_lr.plot(*zip(*lrs, strict=True))
        ax_lr.set_yscale("log")
    ax_lr.set(xlabel="epoch", ylabel="learning rate", title="Learning rate")
    fig.tight_layout()
    try:
        return atomic_write(path, lambda p: fig.savefig(p, dpi=dpi, format="png"))
    finally:
        plt.close(fig)
