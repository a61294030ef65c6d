"""A model file that describes itself: the network and preprocessing settings saved beside the weights.

``models/model.pt`` stays a plain state dict (what MONAI's ``CheckpointLoader``, ``ckpt_export`` and the Model Zoo
load, with ``weights_only=True``). Beside it, ``models/model.json`` records the settings it was trained with
(:data:`SETTINGS`: encoder, normalisation, decoder channels, patch size, input/output channels, voxel size,
intensity scaling and the full-resolution head's width; a file written before a setting existed reads as its
default, :data:`SETTING_DEFAULTS`), written atomically each time the best model is saved. Inference, evaluation and
export check the config they build against it before any weight is loaded, and stop with one line naming every
difference and the flags that match the model. A model.pt without a model.json (saved before 0.3) is loaded as
before, unchecked. The settings file may also store the probability threshold chosen on the validation split
(top-level ``"threshold"``), which ``threshold "auto"`` uses (:func:`resolve_threshold`), and the test-time
augmentation of the recipe that trained the model (top-level ``"tta"``), which ``tta "auto"`` uses
(:func:`resolve_tta`), the image contrasts it was trained for (top-level ``"contrasts"``, BIDS suffixes such as
``["T2w", "T1w", "FLAIR"]``), which ``contrasts "auto"`` uses (:func:`resolve_contrasts`), and the SHA-256 of
``model.pt`` (top-level ``"sha256"``), which :func:`check_model_file` compares before any weight is loaded.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from scripts.bids import DEFAULT_CONTRASTS, as_contrasts, contrast_names
from scripts.errors import BundleError
from scripts.io import atomic_write, sha256_file
from scripts.settings import TTA_MODES

logger = logging.getLogger("pvs_bundle.model_file")

SETTINGS: tuple[str, ...] = (
    "encoder_name",
    "norm",
    "decoder_channels",
    "patch_size",
    "in_channels",
    "classes",
    "pixdim",
    "intensity",
    "full_res_channels",
)
# Settings a model.json written before they existed lacks, with the value its model was built with.
SETTING_DEFAULTS: dict[str, Any] = {"full_res_channels": 0}


def settings_file(model_file: str | Path) -> Path:
    """Return the settings file of a model file: ``model.pt`` -> ``model.json`` beside it."""
    return Path(model_file).expanduser().with_suffix(".json")


def _plain(value: Any) -> Any:
    """The JSON form of a setting (tuples become lists), so that saved and configured values compare equal."""
    return json.loads(json.dumps(value))


def check_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Return the settings as plain JSON values, in the order of :data:`SETTINGS`.

    Raises:
        ValueError: if a setting is missing.
    """
    settings = {**SETTING_DEFAULTS, **settings}
    missing = [k for k in SETTINGS if k not in settings]
    if missing:
        raise ValueError(f"model settings must hold {list(SETTINGS)}, not lack {missing}.")
    return {k: _plain(settings[k]) for k in SETTINGS}


def write_settings(model_file: str | Path, settings: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> Path:
    """Write the settings of ``model_file`` beside it (``model.json``), atomically.

    Args:
        model_file: the model file.
        settings: the network and preprocessing settings (:data:`SETTINGS`).
        extra: what else belongs to this model, after the settings (the validation-chosen ``threshold``).

    Raises:
        ValueError: if a setting is missing, or ``extra`` would replace one.
    """
    extra = dict(extra or {})
    if clash := sorted(set(extra) & set(SETTINGS)):
        raise ValueError(f"extra model information must not replace the settings {clash}.")
    text = json.dumps({**check_settings(settings), **_plain(extra)}, indent=4) + "\n"
    return atomic_write(settings_file(model_file), lambda p: p.write_text(text))


def read_settings(model_file: str | Path) -> dict[str, Any] | None:
    """Return the settings saved beside ``model_file``, or None for a model saved without them.

    Raises:
        BundleError: if the settings file cannot be read as JSON.
    """
    path = settings_file(model_file)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        name = Path(model_file).name
        raise BundleError(f"{path} must be the JSON settings of {name}, not unreadable ({err}).") from err


def _flag(name: str, value: Any) -> str:
    """A command-line override that sets one setting, as ``python -m monai.bundle run`` reads it."""
    if isinstance(value, str):
        return f"--{name} {value}"
    return f"--{name} '{json.dumps(value, separators=(',', ':'))}'"


def check_model_settings(
    model_file: str | Path, settings: Mapping[str, Any], grow: Sequence[str] = ()
) -> dict[str, Any] | None:
    """Check that the config builds the network ``model_file`` was trained as; do nothing for a legacy file.

    Args:
        model_file: the state dict (``models/model.pt``); its settings are read from ``model.json`` beside it.
        settings: the settings this config builds the network and preprocessing with (:data:`SETTINGS`).
        grow: settings that may go from their default (:data:`SETTING_DEFAULTS`) in the file to another value in
            the config: a warm start that adds a part to a trained network (``full_res_channels``).

    Returns:
        The saved settings (with the defaults of those it lacks), or None when ``model_file`` has no settings file
        (or does not exist: the workflow's own check reports that).

    Raises:
        BundleError: naming every setting that differs, and the flags that match the model.
    """
    saved = read_settings(model_file)
    if saved is None:
        if Path(model_file).expanduser().is_file():
            logger.info("%s has no %s beside it: its settings cannot be checked.", model_file, "model.json")
        return None
    wanted = check_settings(settings)
    saved = {**SETTING_DEFAULTS, **saved}
    grown = [k for k in grow if k in SETTING_DEFAULTS and saved[k] == SETTING_DEFAULTS[k]]
    differ = [k for k in SETTINGS if k in saved and k not in grown and saved[k] != wanted[k]]
    if differ:
        trained = ", ".join(f"{k} {saved[k]}" for k in differ)
        built = ", ".join(f"{k} {wanted[k]}" for k in differ)
        flags = " ".join(_flag(k, saved[k]) for k in differ)
        raise BundleError(
            f"{model_file} was trained with {trained}; this config builds {built}: add the config it was trained "
            f"with (configs/demo.json for models/demo/) or pass {flags}"
        )
    logger.info("Model %s: %s.", model_file, ", ".join(f"{k} {saved[k]}" for k in SETTINGS if k in saved))
    return saved


def _is_probability(value: Any) -> bool:
    """Whether ``value`` is a number (not a bool) strictly between 0 and 1."""
    return isinstance(value, int | float) and not isinstance(value, bool) and 0.0 < float(value) < 1.0


def resolve_threshold(value: str | float, model_file: str | Path) -> float:
    """The probability threshold of the masks: ``value`` itself, or for ``"auto"`` the one stored with the model.

    ``"auto"`` takes the top-level ``"threshold"`` of ``model.json`` beside ``model_file`` (chosen on the validation
    split by training), else 0.5 (a model file without settings, or settings without a threshold). Logs once which
    threshold is used and where it came from.

    Args:
        value: ``"auto"`` or a number in (0, 1).
        model_file: the model file whose ``model.json`` may store a threshold.

    Returns:
        The threshold, a float in (0, 1).

    Raises:
        ValueError: if ``value`` is neither ``"auto"`` nor a number in (0, 1).
        BundleError: if ``model.json`` stores a threshold that is not a number in (0, 1), or cannot be read.
    """
    if value != "auto":
        if not _is_probability(value):
            raise ValueError(f"threshold must be 'auto' or a number in (0, 1), not {value!r}.")
        logger.info("Probability threshold %g (set by threshold).", value)
        return float(value)
    path = settings_file(model_file)
    stored = (read_settings(model_file) or {}).get("threshold")
    if stored is None:
        logger.info("Probability threshold 0.5 (threshold auto: %s stores none).", path)
        return 0.5
    if not _is_probability(stored):
        raise BundleError(f"{path} must store a threshold in (0, 1), not {stored!r}: retrain, or pass --threshold 0.5")
    logger.info("Probability threshold %g (threshold auto: chosen on validation, stored in %s).", stored, path)
    return float(stored)


def release_default(model_file: str | Path, key: str, fallback: Any) -> Any:
    """A test-time setting's default: the one the model's release recommends, else ``fallback``.

    A released model (:mod:`scripts.model.release`) may store under ``"defaults"`` in ``model.json`` the test-time
    settings it was judged with (such as ``{"min_pvs_mm3": "auto"}``), so that ``inference.json``'s
    defaults run it as its figures were measured. An override on the command line still wins.

    Args:
        model_file: the model file whose ``model.json`` may store defaults.
        key: the setting, as the configs name it.
        fallback: the default of a model whose release stores none.

    Returns:
        The stored default, or ``fallback``.

    Raises:
        BundleError: if ``model.json`` stores ``"defaults"`` that is not a JSON object.
    """
    stored = (read_settings(model_file) or {}).get("defaults", {})
    if not isinstance(stored, dict):
        raise BundleError(f"{settings_file(model_file)} must store defaults as a JSON object, not {stored!r}.")
    if key in stored:
        logger.info("%s %s by default (the release's, stored in %s).", key, stored[key], settings_file(model_file))
        return stored[key]
    return fallback


def resolve_min_pvs_mm3(value: str | float, model_file: str | Path) -> float:
    """The smallest PVS kept (mm³): ``value`` itself, or for ``"auto"`` the one stored with the model.

    ``"auto"`` takes ``"min_pvs_mm3"`` of ``model.json`` beside ``model_file`` (chosen on the validation split by
    training, :mod:`scripts.training.size_rule`), else 0 (keep every PVS). A stored value is logged with its source.

    Args:
        value: ``"auto"`` or a number >= 0.
        model_file: the model file whose ``model.json`` may store it.

    Returns:
        The volume in mm³, >= 0.

    Raises:
        ValueError: if ``value`` is neither ``"auto"`` nor a number >= 0.
        BundleError: if ``model.json`` stores something other than a number >= 0.
    """

    def is_volume(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and float(v) >= 0.0

    if value != "auto":
        if not is_volume(value):
            raise ValueError(f"min_pvs_mm3 must be 'auto' or a number >= 0, not {value!r}.")
        return float(value)
    stored = (read_settings(model_file) or {}).get("min_pvs_mm3")
    if stored is None:
        return 0.0
    if not is_volume(stored):
        raise BundleError(
            f"{settings_file(model_file)} must store min_pvs_mm3 as a number >= 0, not {stored!r}: retrain, or "
            "pass --min_pvs_mm3 0"
        )
    logger.info("Smallest PVS kept %g mm³ (min_pvs_mm3 auto: chosen on validation).", stored)
    return float(stored)


def resolve_tta(value: str, model_file: str | Path) -> str:
    """The test-time augmentation of evaluation and inference: ``value`` itself, or for ``"auto"`` the model's.

    ``"auto"`` takes the top-level ``"tta"`` of ``model.json`` beside ``model_file`` (the ``tta`` of the recipe that
    trained the model: ``"mirror"`` for the CPU demo recipe), else ``"none"`` (a model file without settings, or
    settings saved before 0.6). Logs once which one is used and where it came from.

    Args:
        value: ``"auto"`` or one of :data:`scripts.settings.TTA_MODES`.
        model_file: the model file whose ``model.json`` may store a ``tta``.

    Returns:
        One of :data:`scripts.settings.TTA_MODES`.

    Raises:
        ValueError: if ``value`` is neither ``"auto"`` nor a known mode.
        BundleError: if ``model.json`` stores an unknown ``tta``, or cannot be read.
    """
    if value != "auto":
        if value not in TTA_MODES:
            raise ValueError(f"tta must be 'auto' or one of {list(TTA_MODES)}, not {value!r}.")
        logger.info("Test-time augmentation %s (set by tta).", value)
        return value
    path = settings_file(model_file)
    stored = (read_settings(model_file) or {}).get("tta")
    if stored is None:
        logger.info("Test-time augmentation none (tta auto: %s stores none).", path)
        return "none"
    if stored not in TTA_MODES:
        modes = " or ".join(TTA_MODES)
        raise BundleError(f"{path} must store a tta among {list(TTA_MODES)}, not {stored!r}: pass --tta {modes}")
    logger.info("Test-time augmentation %s (tta auto: the training recipe's, stored in %s).", stored, path)
    return stored


def resolve_contrasts(value: str | Sequence[str], model_file: str | Path) -> list[str]:
    """The image contrasts a run accepts: ``value`` itself, or for ``"auto"`` those the model was trained for.

    ``"auto"`` takes the top-level ``"contrasts"`` of ``model.json`` beside ``model_file`` (BIDS suffixes, such as
    ``["T2w", "T1w", "FLAIR"]`` for a model trained on domain-randomised images), else ``["T2w"]`` (a model file
    without settings, or settings saved before 0.7). Logs once which contrasts are used and where they came from.

    Args:
        value: ``"auto"``, or BIDS anatomical suffixes: a list, one suffix, or either as the command line gives it
            (``"['T1w','FLAIR']"``, ``"T1w,FLAIR"``).
        model_file: the model file whose ``model.json`` may store ``contrasts``.

    Returns:
        The contrasts, in the order given (stored).

    Raises:
        ValueError: if ``value`` is neither ``"auto"`` nor BIDS anatomical suffixes.
        BundleError: if ``model.json`` stores contrasts that are not BIDS anatomical suffixes, or cannot be read.
    """
    if value != "auto":
        contrasts = list(as_contrasts(value, "contrasts (or 'auto')"))
        logger.info("Image contrasts %s (set by contrasts).", ", ".join(contrasts))
        return contrasts
    path = settings_file(model_file)
    stored = (read_settings(model_file) or {}).get("contrasts")
    if stored is None:
        logger.info("Image contrasts %s (contrasts auto: %s stores none).", ", ".join(DEFAULT_CONTRASTS), path)
        return list(DEFAULT_CONTRASTS)
    try:
        contrasts = list(as_contrasts(stored if isinstance(stored, list) else [], f"the contrasts stored in {path}"))
    except ValueError as err:
        raise BundleError(f"{err} Fix that file, or pass --contrasts \"['T2w']\" with the model's.") from err
    logger.info("Image contrasts %s (contrasts auto: the model's, stored in %s).", ", ".join(contrasts), path)
    return contrasts


def trained_for(contrasts: Sequence[str], model_file: str | Path | None = None) -> str:
    """Say what a model was trained for, for messages: ``the model (models/model.json) was trained for T2w only``."""
    where = f" ({settings_file(model_file)})" if model_file is not None else ""
    return f"the model{where} was trained for {contrast_names(contrasts, 'and')} only"


_FETCH_AGAIN = "fetch it again (git checkout -- {path}, or the URL in large_files.yml) or retrain"


def check_model_file(model_file: str | os.PathLike[str]) -> Path:
    """Check that the model file exists and is intact before any input is read or weight loaded.

    When ``model.json`` beside it records the file's SHA-256 (top-level ``"sha256"``), the file must have that
    digest: then it is byte for byte the file that was recorded, and is not read further. Otherwise it must load
    as a state dict (``torch.load(..., weights_only=True)`` on the CPU; read once more by the workflow's loader).

    Args:
        model_file: path of the network's state dict (``models/model.pt``).

    Returns:
        The path.

    Raises:
        FileNotFoundError: when the file does not exist.
        BundleError: when its SHA-256 differs from the recorded one, or it cannot be read as a state dict (truncated,
            damaged, or not a model), naming the file and the fix.
    """
    path = Path(model_file).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"model file {path} does not exist: run training first (it saves the best model there), or pass "
            "--model_file /path/to/model.pt (or --ckpt_dir with the folder that holds model.pt)."
        )
    fetch = _FETCH_AGAIN.format(path=path)
    recorded = (read_settings(path) or {}).get("sha256")
    if recorded is not None:
        actual = sha256_file(path)
        if not isinstance(recorded, str) or actual != recorded.lower():
            raise BundleError(
                f"{path} does not match the SHA-256 recorded in {settings_file(path)}: it is {actual}, not "
                f"{recorded!r}; the file is damaged or another model: {fetch}."
            )
        return path
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        reason = " ".join(re.split(r"(?<=\.)\s", str(err).strip(), maxsplit=1)[0].split())  # torch's first sentence
        raise BundleError(
            f"{path} cannot be read as a PyTorch state dict ({type(err).__name__}: {reason}): it is damaged or not "
            f"a model; {fetch}."
        ) from err
    if not isinstance(state, Mapping):
        raise BundleError(
            f"{path} must hold a PyTorch state dict (a mapping of tensors), not a {type(state).__name__}: {fetch}."
        )
    return path
