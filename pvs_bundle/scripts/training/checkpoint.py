"""Checkpoints: the best model and the full training state, written atomically, and resuming from them.

``models/model.pt`` holds the network's state dict at the best validation score so far.
``models/training_state.pt`` holds everything a killed run needs to continue: network, optimizer, LR scheduler,
trainer epoch, early-stopping counter and best score, and the validator's best metric. Both are written to a
temporary file and renamed, so a kill at any moment leaves the previous complete file in place.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from torch import nn

from scripts.distributed import is_main_process
from scripts.io import atomic_write
from scripts.model.model_file import write_settings
from scripts.settings import TTA_MODES, as_bool
from scripts.training.threshold import ThresholdSweep

logger = logging.getLogger("pvs_bundle.checkpoint")


def unwrap(network: nn.Module) -> nn.Module:
    """Return the bare network inside a DistributedDataParallel or DataParallel wrapper."""
    return network.module if isinstance(network, nn.DataParallel | nn.parallel.DistributedDataParallel) else network


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename it into place."""
    return atomic_write(path, lambda p: torch.save(obj, p))


class BestModelSaver:
    """Save the network's state dict whenever the validator reports a new best key metric.

    Attach to the validator: MONAI's evaluator updates ``state.best_metric_epoch`` before the handlers run.
    The settings the network was built with go beside it (``model.json``,
    :func:`scripts.model.model_file.write_settings`), so that inference, evaluation and export can check them.

    Args:
        save_file: where the state dict goes (``models/model.pt``).
        network: the network (a DDP wrapper is unwrapped).
        settings: the network and preprocessing settings (:data:`scripts.model.model_file.SETTINGS`), or None.
        threshold_sweep: the validator's :class:`scripts.training.threshold.ThresholdSweep`, whose choice is saved
            with the settings (``"threshold"``), or None.
        tta: the test-time augmentation the recipe recommends for this model, saved with the settings (``"tta"``)
            for ``tta "auto"`` at evaluation and inference (:func:`scripts.model.model_file.resolve_tta`).
        model_info: what else describes the model, saved with the settings (the contrasts it accepts, the data
            and generator it was trained on), or None.

    Raises:
        ValueError: if ``tta`` is not one of :data:`scripts.settings.TTA_MODES`.
    """

    def __init__(
        self,
        save_file: str | Path,
        network: nn.Module,
        settings: dict[str, Any] | None = None,
        threshold_sweep: ThresholdSweep | None = None,
        tta: str = "none",
        model_info: dict[str, Any] | None = None,
    ) -> None:
        if tta not in TTA_MODES:
            raise ValueError(f"tta must be one of {list(TTA_MODES)}, not {tta!r}.")
        self.save_file = Path(save_file)
        self.network = network
        self.settings = settings
        self.threshold_sweep = threshold_sweep
        self.tta = tta
        self.model_info = dict(model_info or {})

    def attach(self, engine: Engine) -> None:
        """Register on the validator's EPOCH_COMPLETED event."""
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        """Save the model if this validation set a new best score."""
        if engine.state.best_metric_epoch == engine.state.epoch and is_main_process():
            save_atomic(unwrap(self.network).state_dict(), self.save_file)
            if self.settings is not None:
                chosen = self.threshold_sweep.stored(engine.state.epoch) if self.threshold_sweep else None
                write_settings(self.save_file, self.settings, {**self.model_info, **(chosen or {}), "tta": self.tta})
            logger.info("Saved the best model (%s) to %s", engine.state.best_metric, self.save_file)


class TrainingStateHandler:
    """Save the full training state after every epoch; resume from it when a run starts.

    Behaviour of a run whose ``ckpt_dir`` already holds results:

    - a training state exists and ``resume`` is true: training continues from its last completed epoch;
    - otherwise, if any of ``guarded_files`` exists: the run stops with an error naming them, rather than
      overwrite an earlier run's results (choose new ``--ckpt_dir``/``--output_dir`` or delete them).

    Attach it after the validation and history handlers, so the state saved at an epoch's end includes that
    epoch's validation.

    Args:
        state_file: path of the training state (``models/training_state.pt``).
        network: the network.
        optimizer: the optimizer.
        lr_scheduler: the learning-rate scheduler.
        validator: the evaluator (its best metric and epoch are saved).
        early_stop: MONAI ``EarlyStopHandler`` whose counter and best score are saved, or None.
        cpu_budget: :class:`scripts.training.budget.CPUBudget` whose CPU minutes are saved, or None.
        resume: whether to continue from an existing training state.
        guarded_files: result files that a fresh run must not overwrite.
    """

    def __init__(
        self,
        state_file: str | Path,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        lr_scheduler: Any,
        validator: Engine,
        early_stop: Any = None,
        cpu_budget: Any = None,
        resume: bool | str = True,
        guarded_files: list[str | Path] | tuple = (),
    ) -> None:
        self.state_file = Path(state_file)
        self.network = network
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.validator = validator
        self.early_stop = early_stop
        self.cpu_budget = cpu_budget
        self.resume = as_bool(resume, "resume")
        self.guarded_files = [Path(f) for f in guarded_files]

    def attach(self, engine: Engine) -> None:
        """Register on the trainer: resume at STARTED, save at EPOCH_COMPLETED."""
        engine.add_event_handler(Events.STARTED, self.start)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self.report)

    def _early_stopping(self) -> Any:
        return getattr(self.early_stop, "_handler", None)

    def state_dict(self, engine: Engine) -> dict[str, Any]:
        """Collect everything needed to continue training."""
        early = self._early_stopping()
        return {
            "epoch": engine.state.epoch,
            "network": unwrap(self.network).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "trainer": engine.state_dict(),
            "early_stopping": early.state_dict() if early is not None else None,
            "cpu_budget": self.cpu_budget.state_dict() if self.cpu_budget is not None else None,
            "validator": {
                "best_metric": float(self.validator.state.best_metric),
                "best_metric_epoch": int(self.validator.state.best_metric_epoch),
            },
        }

    def start(self, engine: Engine) -> None:
        """Resume from the saved state, or refuse to overwrite an earlier run's results.

        Raises:
            FileExistsError: when results exist that this run would overwrite.
        """
        if self.state_file.is_file() and self.resume:
            self.load(engine)
            return
        existing = [str(f) for f in [self.state_file, *self.guarded_files] if f.exists()]
        if existing:
            hint = "" if self.resume else " or pass --resume true to continue the earlier run"
            raise FileExistsError(
                f"results of an earlier run exist and would be overwritten: {', '.join(existing)}. "
                f"Choose a new --ckpt_dir and --output_dir, or move these files away{hint}."
            )

    def load(self, engine: Engine) -> None:
        """Load the saved state into the network, optimizer, scheduler, trainer, early stop, budget and validator."""
        state = torch.load(self.state_file, map_location="cpu", weights_only=True)
        unwrap(self.network).load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        max_epochs = engine.state.max_epochs
        engine.load_state_dict(state["trainer"])
        engine.state.max_epochs = max_epochs
        early = self._early_stopping()
        if early is not None and state["early_stopping"] is not None:
            early.load_state_dict(state["early_stopping"])
        if self.cpu_budget is not None and state.get("cpu_budget") is not None:
            self.cpu_budget.load_state_dict(state["cpu_budget"])
        self.validator.state.best_metric = state["validator"]["best_metric"]
        self.validator.state.best_metric_epoch = state["validator"]["best_metric_epoch"]
        logger.info(
            "Resuming from %s: epoch %d of %d done, best %s so far at epoch %d.",
            self.state_file,
            engine.state.epoch,
            max_epochs,
            self.validator.state.best_metric,
            self.validator.state.best_metric_epoch,
        )
        if engine.state.epoch >= max_epochs:
            logger.warning(
                "This run already trained all %d epochs: nothing to do. To train on, pass --max_epochs N with N "
                "above %d (it continues from epoch %d); to train anew, choose a new --ckpt_dir and --output_dir.",
                engine.state.epoch,
                engine.state.epoch,
                engine.state.epoch,
            )

    def report(self, engine: Engine) -> None:
        """Name the results at the end of a run: the best score and every file this handler guards."""
        if not is_main_process():
            return
        files = [str(f) for f in [*self.guarded_files, self.state_file] if f.exists()]
        logger.info(
            "Training finished at epoch %d of %d; best %s at epoch %d. Wrote %s.",
            engine.state.epoch,
            engine.state.max_epochs,
            self.validator.state.best_metric,
            self.validator.state.best_metric_epoch,
            ", ".join(files),
        )

    def __call__(self, engine: Engine) -> None:
        """Save the training state at the end of an epoch (main process only)."""
        if is_main_process():
            save_atomic(self.state_dict(engine), self.state_file)
