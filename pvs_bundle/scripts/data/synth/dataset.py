"""The synthetic training source as a datalist and transforms, and the fixed-seed validation volumes.

- Training items are ``{"seed": k, "source": "synthetic"}``: :class:`SynthLabelMapd` draws the label map of a seed
  (deterministic, so the bundle's caching dataset keeps it in RAM and, with ``--cache_dir``, on disk), and
  :class:`scripts.data.synth.render.RandSynthPatchesd` renders it into new patches at every epoch.
- With a labelled dataset as well (``--dataset_dir``), its training cases (``"source": "real"``) are mixed in:
  ``synthetic_fraction`` of the training items are synthetic; :class:`SourceSwitchd` and :class:`RandSourceSwitchd`
  send each item through its own chain.
- Validation volumes are label maps of seeds never drawn for training, rendered once per contrast (T2w, T1w, FLAIR)
  at 0.8 mm with fixed seeds and written as a small BIDS dataset (one PVS mask per subject, shared by its three
  images), so validation runs through the bundle's ordinary preprocessing, as inference does, and is reported per
  contrast. A marker file records what was generated; other settings regenerate it.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from monai.transforms import Compose, MapTransform, Randomizable

from scripts.data.synth.anatomy import GENERATOR_VERSION, VOXEL_MM, check_version, label_map
from scripts.data.synth.render import draw_scan, render_volume
from scripts.io import atomic_write_json
from scripts.nifti import write_nifti_gz

logger = logging.getLogger("pvs_bundle.synth")

VALIDATION_FAMILIES: tuple[str, ...] = ("T2w", "T1w", "FLAIR")
VALIDATION_SEED_OFFSET = 1_000_000
"""Validation label maps use seeds from here on; training seeds stay below it."""
MARKER_NAME = ".pvs_synth_validation.json"
SOURCE_KEY = "source"


class SynthLabelMapd(MapTransform):
    """Draw the label map of an item's ``seed``: adds ``labels``, ``pv``, ``csf`` (uint8, (1, *shape)), ``centres``.

    Args:
        shape: the field of view in voxels at 0.8 mm.
        max_pvs: the most PVS a map may hold.
        version: the generator version (:data:`scripts.data.synth.anatomy.GENERATOR_VERSIONS`).
    """

    def __init__(
        self, shape: Sequence[int] = (96, 112, 96), max_pvs: int = 150, version: int = GENERATOR_VERSION
    ) -> None:
        super().__init__("seed")
        self.shape = tuple(int(s) for s in shape)
        self.max_pvs = int(max_pvs)
        self.version = check_version(version)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Add the label map of ``data["seed"]``."""
        drawn = label_map(int(data["seed"]), self.shape, self.max_pvs, self.version)
        return {
            **data,
            "labels": drawn.labels[None],
            "pv": drawn.pv[None],
            "csf": drawn.csf[None],
            "centres": drawn.centres,
        }


class SourceSwitchd(MapTransform):
    """Send an item through the chain of its ``source`` (``"synthetic"`` or ``"real"``): the deterministic part.

    Args:
        synthetic: transforms for synthetic items.
        real: transforms for real labelled cases (None: an error names the item).
    """

    def __init__(self, synthetic: Sequence[Any], real: Sequence[Any] | None = None) -> None:
        super().__init__(SOURCE_KEY, allow_missing_keys=True)
        self.synthetic = Compose(list(synthetic))
        self.real = Compose(list(real)) if real is not None else None

    def _chain(self, data: Mapping[Hashable, Any]) -> Compose:
        if data.get(SOURCE_KEY, "real") == "synthetic":
            return self.synthetic
        if self.real is None:
            raise ValueError(f"no transforms for real cases, yet the datalist holds one: {dict(data)}")
        return self.real

    def __call__(self, data: Mapping[Hashable, Any]) -> Any:
        """Apply the item's chain."""
        return self._chain(data)(data)


class RandSourceSwitchd(Randomizable, SourceSwitchd):
    """:class:`SourceSwitchd` for the random part (flagged random, so caching stops before it)."""

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> Randomizable:
        """Seed both chains (the data loader seeds each worker through this)."""
        super().set_random_state(seed, state)
        for chain in (self.synthetic, self.real):
            if chain is not None:
                chain.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        """No state of its own."""


def synthetic_datalist(
    n_label_maps: int,
    seed: int = 0,
    validation: Sequence[dict[str, Any]] = (),
    real: Mapping[str, Sequence[dict[str, Any]]] | None = None,
    synthetic_fraction: float = 1.0,
) -> dict[str, list[dict[str, Any]]]:
    """The training and validation items of a synthetic (or mixed) training.

    Args:
        n_label_maps: synthetic label maps to train on (seeds ``seed * n_label_maps`` onward, below the validation
            seeds).
        seed: which block of seeds.
        validation: the synthetic validation items (:func:`ensure_validation_set`), used when there is no real data.
        real: a labelled dataset's datalist (``training``, ``validation``, ``test``), or None.
        synthetic_fraction: the share of synthetic items among the training items when ``real`` is given (1: all).

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}``.

    Raises:
        ValueError: on a bad count or fraction.
    """
    if isinstance(n_label_maps, bool) or not isinstance(n_label_maps, int) or n_label_maps < 1:
        raise ValueError(f"n_label_maps must be a positive int, not {n_label_maps!r}.")
    if not 0.0 < float(synthetic_fraction) <= 1.0:
        raise ValueError(f"synthetic_fraction must be in (0, 1], not {synthetic_fraction!r}.")
    first = int(seed) * n_label_maps
    if first + n_label_maps > VALIDATION_SEED_OFFSET:
        raise ValueError(f"seed {seed} with {n_label_maps} maps reaches the validation seeds; pass a smaller seed.")
    synthetic = [{"seed": k, SOURCE_KEY: "synthetic", "id": f"synth-{k}"} for k in range(first, first + n_label_maps)]
    if not real or not real.get("training"):
        return {"training": synthetic, "validation": list(validation), "test": []}
    cases = [{**case, SOURCE_KEY: "real"} for case in real["training"]]
    if synthetic_fraction < 1.0:
        wanted = round(len(cases) * synthetic_fraction / (1.0 - synthetic_fraction))
        synthetic = [synthetic[k % len(synthetic)] for k in range(wanted)]
    logger.info("Training on %d labelled case(s) and %d synthetic label map(s).", len(cases), len(synthetic))
    return {
        "training": cases + synthetic,
        "validation": list(real.get("validation") or validation),
        "test": list(real.get("test") or []),
    }


def generator_info(version: int = GENERATOR_VERSION, **settings: Any) -> dict[str, Any]:
    """What a model.json records of the generator that trained it: module, version and the given settings."""
    return {"module": "scripts.data.synth", "version": check_version(version), **settings}


def _write(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    """Write one validation volume with the bundle's one gzip NIfTI writer (reproducible bytes, atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(data, affine)
    image.header.set_xyzt_units("mm", "sec")
    write_nifti_gz(image, path)


def ensure_validation_set(
    out_dir: str | Path,
    n_subjects: int = 2,
    shape: Sequence[int] = (96, 112, 96),
    families: Sequence[str] = VALIDATION_FAMILIES,
    max_pvs: int = 150,
    version: int = GENERATOR_VERSION,
) -> list[dict[str, Any]]:
    """Write the fixed-seed validation volumes once (BIDS layout) and return their datalist items.

    Subject ``sub-vNN`` is the label map of seed :data:`VALIDATION_SEED_OFFSET` + NN rendered as each contrast of
    ``families`` (``sub-v01/anat/sub-v01_T1w.nii.gz``…), plainly (no bias field, gamma or ghosting; 0.8 mm), beside
    one mask ``derivatives/mask/sub-v01/sub-v01_desc-mask_PVS.nii.gz``. Label maps without PVS are passed over.

    Args:
        out_dir: the folder (created; regenerated when its marker records other settings).
        n_subjects: label maps.
        shape: their field of view.
        families: the contrasts rendered.
        max_pvs: as for training.
        version: the generator version, as for training.

    Returns:
        Items ``{"image", "label", "id", "contrast"}``, absolute paths.
    """
    root = Path(out_dir).expanduser()
    settings = {
        "generator_version": check_version(version),
        "n_subjects": int(n_subjects),
        "shape": [int(s) for s in shape],
        "families": list(families),
        "max_pvs": int(max_pvs),
    }
    marker = root / MARKER_NAME
    current = json.loads(marker.read_text()) if marker.is_file() else None
    subjects: list[tuple[str, int]] = []
    seed = VALIDATION_SEED_OFFSET
    if current != settings:
        if root.exists():
            if not marker.is_file() and any(root.iterdir()):
                raise FileExistsError(f"{root} holds files that are not synthetic validation volumes; choose another.")
            shutil.rmtree(root)
        affine = np.diag([VOXEL_MM, VOXEL_MM, VOXEL_MM, 1.0])
        while len(subjects) < n_subjects:
            seed += 1
            drawn = label_map(seed, shape, max_pvs, version)
            if not (drawn.pv >= 128).any():
                continue
            name = f"sub-v{len(subjects) + 1:02d}"
            rng = np.random.default_rng([seed, 7])
            label = None
            for family in families:
                scan = draw_scan(rng, family, (VOXEL_MM,) * 3, True)
                image, label = render_volume(drawn.labels, drawn.pv, scan, rng, csf=drawn.csf)
                _write(root / name / "anat" / f"{name}_{family}.nii.gz", np.rint(image * 1000).astype(np.int16), affine)
            _write(root / "derivatives/mask" / name / f"{name}_desc-mask_PVS.nii.gz", label.astype(np.int16), affine)
            subjects.append((name, seed))
        atomic_write_json(marker, settings)
        logger.info("Wrote %d synthetic validation subject(s) x %s to %s", n_subjects, "/".join(families), root)
    items = []
    for number in range(1, n_subjects + 1):
        name = f"sub-v{number:02d}"
        for family in families:
            items.append(
                {
                    "image": str(root / name / "anat" / f"{name}_{family}.nii.gz"),
                    "label": str(root / "derivatives/mask" / name / f"{name}_desc-mask_PVS.nii.gz"),
                    "id": f"{name}_{family}",
                    "contrast": family,
                }
            )
    return items
