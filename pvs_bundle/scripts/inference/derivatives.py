"""The inference output folder as a BIDS derivatives dataset, and the per-input record that lets a run resume.

BIDS derivatives (specification, "Derivatives" and "Common data types and metadata"): the folder holds a
``dataset_description.json`` with ``DatasetType: "derivative"``, ``GeneratedBy`` (this bundle, its version) and
``SourceDatasets`` (the input dataset: its DOI when its own description gives one, else its location); each mask
``<entities of the input>_desc-pvs_mask.nii.gz`` has a JSON sidecar ``..._desc-pvs_mask.json`` whose ``Sources``
name the input as a BIDS URI (``bids:raw:sub-01/anat/sub-01_T2w.nii.gz``, ``raw`` being declared in
``DatasetLinks``). Masks are in their input's own voxel grid, so they carry no ``space`` entity.

The sidecar also records how the mask was made (model file and SHA-256, threshold, settings, bundle version) and
the input's PVS burden row (``PVSBurden``). It is written last, after the mask, so an input whose sidecar names
the current model and threshold and whose mask is readable on the input's grid is complete: ``--skip_existing
true`` keeps it, and the run's table takes its row from the sidecar.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from scripts.io import atomic_write_json, sha256_file
from scripts.nifti import DATA_ERRORS, HEADER_ERRORS

logger = logging.getLogger("pvs_bundle.derivatives")

BIDS_VERSION = "1.10.0"
PIPELINE_NAME = "pvs_bundle"
SOURCE_LINK = "raw"
BURDEN_KEY = "PVSBurden"
DESCRIPTION_FILE = "dataset_description.json"
AFFINE_TOLERANCE = 1e-4


def sidecar_path(image_path: str | Path) -> Path:
    """The JSON sidecar of a NIfTI output: the same name with ``.json`` for ``.nii[.gz]``."""
    path = Path(image_path)
    name = path.name.removesuffix(".gz").removesuffix(".nii")
    return path.with_name(f"{name}.json")


class Provenance:
    """What inference records about its outputs: the dataset description, each mask's sidecar, and the check of both.

    Args:
        output_dir: the derivatives dataset (inference's output folder).
        dataset_dir: the input dataset (a BIDS dataset or a folder of NIfTI files).
        input_files: an explicit list of inputs; when given, their common folder is the source dataset.
        model_file: the model file used (weights, TorchScript or ONNX; hashed once, when first needed); None: none.
        metadata_file: the bundle's ``configs/metadata.json`` (its ``version``).
        threshold: the probability threshold of the masks.
        settings: further settings recorded in every sidecar (pixdim, patch size, overlap...).
        code_url: where the bundle's code can be found, recorded in ``GeneratedBy`` when given.
    """

    def __init__(
        self,
        output_dir: str | Path,
        dataset_dir: str | Path,
        input_files: Sequence[str] | str = (),
        model_file: str | Path | None = None,
        metadata_file: str | Path | None = None,
        threshold: float = 0.5,
        settings: Mapping[str, Any] | None = None,
        code_url: str | None = None,
    ) -> None:
        files = [input_files] if isinstance(input_files, str) else list(input_files or ())
        if files:
            self.source_root = Path(os.path.commonpath([Path(f).expanduser().resolve().parent for f in files]))
        else:
            self.source_root = Path(dataset_dir).expanduser().resolve()
        self.output_dir = Path(output_dir).expanduser()
        self.model_file = Path(model_file) if model_file else None
        has_metadata = metadata_file is not None and Path(metadata_file).is_file()  # absent: bundle_root elsewhere
        metadata = json.loads(Path(metadata_file).read_text()) if has_metadata else {}
        self.version = str(metadata.get("version", "unknown"))
        self.threshold = float(threshold)
        self.settings = json.loads(json.dumps(dict(settings or {})))  # plain JSON types, as read back
        self.code_url = code_url
        self._model_sha256: str | None = None

    @property
    def model_sha256(self) -> str | None:
        """SHA-256 of the model file (None without one)."""
        if self.model_file is not None and self._model_sha256 is None:
            self._model_sha256 = sha256_file(self.model_file)
        return self._model_sha256

    def source_uri(self, image: str | Path) -> str:
        """The input as a BIDS URI into the source dataset, or its absolute path when outside it."""
        path = Path(image).expanduser().resolve()
        if path.is_relative_to(self.source_root):
            return f"bids:{SOURCE_LINK}:{path.relative_to(self.source_root).as_posix()}"
        return str(path)

    def dataset_description(self) -> dict[str, Any]:
        """The derivatives dataset's ``dataset_description.json`` content."""
        source: dict[str, Any] = {"URL": self.source_root.as_uri()}
        source_description = self.source_root / DESCRIPTION_FILE
        if source_description.is_file():
            try:
                described = json.loads(source_description.read_text())
            except (OSError, ValueError) as err:
                logger.warning("Cannot read %s (%s): the source dataset is recorded by path.", source_description, err)
                described = {}
            doi = str(described.get("DatasetDOI", "")).removeprefix("doi:")
            if doi:
                source = {"DOI": doi, "URL": f"https://doi.org/{doi}"}
        generated_by: dict[str, Any] = {"Name": PIPELINE_NAME, "Version": self.version}
        if self.code_url:
            generated_by["CodeURL"] = self.code_url
        return {
            "Name": "PVS masks (pvs_bundle)",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "derivative",
            "GeneratedBy": [generated_by],
            "SourceDatasets": [source],
            "DatasetLinks": {SOURCE_LINK: self.source_root.as_uri()},
        }

    def write_dataset_description(self) -> Path:
        """Write ``dataset_description.json`` into the output folder."""
        return atomic_write_json(self.output_dir / DESCRIPTION_FILE, self.dataset_description())

    def sidecar(self, image: str | Path, row: Mapping[str, Any]) -> dict[str, Any]:
        """The JSON sidecar of one input's mask, with its PVS burden ``row``."""
        return {
            "Description": "Perivascular spaces (PVS) segmented by a 3D UNet++, in the input's voxel grid.",
            "Type": "ROI",
            "Sources": [self.source_uri(image)],
            "ModelFile": None if self.model_file is None else str(self.model_file),
            "ModelSHA256": self.model_sha256,
            "Threshold": self.threshold,
            "Settings": self.settings,
            "BundleVersion": self.version,
            BURDEN_KEY: dict(row),
        }

    def run_settings(self) -> dict[str, Any]:
        """What every mask of one cohort must share: model, threshold, settings and bundle version."""
        sidecar = self.sidecar("", {})
        return {key: sidecar[key] for key in ("ModelSHA256", "Threshold", "Settings", "BundleVersion")}

    def write_sidecar(self, image: str | Path, mask: str | Path, row: Mapping[str, Any]) -> Path:
        """Write the sidecar of ``mask`` (after the mask itself: its presence marks the input complete)."""
        return atomic_write_json(sidecar_path(mask), self.sidecar(image, row))

    def completed_row(self, image: str | Path, outputs: Sequence[str | Path]) -> dict[str, Any] | None:
        """The recorded burden row of an input whose outputs are complete and valid, or None when it must be redone.

        Complete and valid: the first output's (the mask's) sidecar records the current model, threshold and
        settings, and every output is a readable NIfTI image with the input's shape and affine.

        Args:
            image: the input.
            outputs: its outputs, the mask first (then the probability map, when written).
        """
        record_file = sidecar_path(outputs[0])
        try:
            record = json.loads(record_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            logger.warning("%s cannot be read (%s): its input is segmented again.", record_file, err)
            return None
        expected = self.sidecar(image, {})
        changed = [
            key for key in ("Sources", "ModelSHA256", "Threshold", "Settings") if record.get(key) != expected[key]
        ]
        if changed or not isinstance(record.get(BURDEN_KEY), dict):
            logger.info("%s: %s differ from this run's; segmenting it again.", image, changed or [BURDEN_KEY])
            return None
        reference = nib.load(str(image))
        for output in outputs:
            problem = _grid_problem(Path(output), reference.shape[:3], reference.affine)
            if problem:
                logger.warning("%s %s; segmenting %s again.", output, problem, image)
                return None
        return record[BURDEN_KEY]


def _grid_problem(path: Path, shape: tuple[int, ...], affine: np.ndarray) -> str | None:
    """What is wrong with an existing output (missing, unreadable, truncated, another grid), or None."""
    if not path.is_file():
        return "is missing"
    try:
        image = nib.load(str(path))
        np.asanyarray(image.dataobj)  # reads every voxel: a truncated file fails here
    except (*HEADER_ERRORS, *DATA_ERRORS) as err:
        return f"cannot be read ({type(err).__name__}: {err})"
    if image.shape != shape or not np.allclose(image.affine, affine, atol=AFFINE_TOLERANCE):
        return f"is not on the input's grid (shape {image.shape}, not {shape}, or another affine)"
    return None
