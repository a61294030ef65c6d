"""The demo dataset's files, in the BIDS layout and metadata format of OpenNeuro ds005595.

Layout written (names exactly as in ds005595; the parcellation under ``derivatives/synthseg`` is the demo's own)::

    dataset_description.json  participants.json  participants.tsv  README.txt
    sub-001/anat/sub-001_T2w.nii.gz (+ .json sidecar)
    derivatives/mask/sub-001/sub-001_desc-mask_PVS.nii.gz (+ .json sidecar)
    derivatives/synthseg/dataset_description.json
    derivatives/synthseg/sub-001/anat/sub-001_desc-synthseg_dseg.nii.gz

Every file is written with fixed bytes for fixed content (gzip mtime 0, :func:`scripts.nifti.write_nifti_gz`), so a
seed gives byte-identical datasets.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from scripts.data.demo.contrasts import DEFAULT_CONTRAST
from scripts.data.demo.subject import SyntheticSubject
from scripts.nifti import write_nifti_gz

DEMO_NAME = "Synthetic perivascular space demo dataset mirroring OpenNeuro ds005595 (not real data)"
GENERATOR = "pvs_bundle scripts.data.demo_data"
"""The generator's name in the files it writes and in the completion marker (its command-line module)."""
GENERATOR_VERSION = 2
"""2: adds the parcellation under derivatives/synthseg (images and masks unchanged)."""
REPETITION_TIME_S = 3.2
PARCELLATION_DIR = "derivatives/synthseg"
PARCELLATION_SUFFIX = "_desc-synthseg_dseg.nii.gz"

_PARTICIPANTS_JSON = {
    "participant_id": {
        "Description": "Unique identifier for each participant.",
        "LongName": "Participant ID",
        "Units": "n/a",
    },
    "age": {
        "Description": "Age of the participant at the time of data collection.",
        "LongName": "Age",
        "Units": "years",
        "DataType": "float",
    },
    "sex": {
        "Description": "Biological sex of the participant.",
        "LongName": "Sex",
        "Levels": {"M": "Male", "F": "Female"},
    },
}
_README = """\
Synthetic demo data for pvs_bundle: NOT real MRI.

It mirrors the layout and metadata format of OpenNeuro ds005595 ("Precise perivascular space segmentation
on T2-weighted magnetic resonance imaging from Human Connectome Project-Aging", Chai et al.,
doi:10.18112/openneuro.ds005595.v1.0.0), whose authors did not make or check it.
Images are {images} drawn from the MNI ICBM152 2009 templates shipped with nilearn, with
synthetic perivascular spaces and their masks; participants are synthetic too.
Regenerate with: cd pvs_bundle && python -m scripts.data.demo_data --out_dir DIR{options}

MNI ICBM152 2009 templates (Fonov et al., NeuroImage 2011): Copyright (C) 1993-2009 Louis Collins,
McConnell Brain Imaging Centre, Montreal Neurological Institute, McGill University."""


def write_dataset_files(root: Path, contrast: str, voxel_size_mm: tuple[float, float, float] | None) -> None:
    """Write the dataset-level files: descriptions (the dataset's and the parcellation's), README, participants.json.

    Args:
        root: the dataset root.
        contrast: the images' contrast, named in README.txt unless it is the default.
        voxel_size_mm: their voxel size, named in README.txt unless it is None (the default grid).
    """
    _write_text(root / "dataset_description.json", json.dumps(_dataset_description(), indent=4))
    _write_text(root / "README.txt", _readme(contrast, voxel_size_mm))
    _write_text(root / "participants.json", json.dumps(_PARTICIPANTS_JSON, indent=4))
    _write_text(root / PARCELLATION_DIR / "dataset_description.json", json.dumps(_parcellation_description(), indent=4))


def write_subject(root: Path, subject: SyntheticSubject, contrast: str, parcellation: np.ndarray) -> None:
    """Write one subject's image and PVS mask (each with its JSON sidecar) and its parcellation (without).

    Args:
        root: the dataset root.
        subject: the subject.
        contrast: its contrast, the image's BIDS suffix.
        parcellation: its parcellation, on the image's grid.
    """
    sid = subject.subject_id
    _write_nifti(root / sid / "anat" / f"{sid}_{contrast}.nii.gz", subject.image, subject.affine)
    _write_nifti(root / "derivatives" / "mask" / sid / f"{sid}_desc-mask_PVS.nii.gz", subject.mask, subject.affine)
    _write_nifti(
        root / PARCELLATION_DIR / sid / "anat" / f"{sid}{PARCELLATION_SUFFIX}", parcellation, subject.affine, False
    )


def write_participants(root: Path, seed: int, numbers: Sequence[int]) -> None:
    """Write participants.tsv (CRLF line ends, as in ds005595): a synthetic age and sex per subject.

    Args:
        root: the dataset root.
        seed: the dataset seed, from which each participant's age and sex are drawn.
        numbers: the subject numbers, in order.
    """
    rows = ["participant_id\tage\tsex", *("\t".join([f"sub-{n:03d}", *_participant(seed, n)]) for n in numbers)]
    _write_text(root / "participants.tsv", "\r\n".join(rows))


def _readme(contrast: str, voxel_size_mm: tuple[float, float, float] | None) -> str:
    """README.txt; with the defaults, the same text as before contrasts and voxel sizes existed."""
    images, options = f"{contrast.removesuffix('w')}-like volumes", ""
    if contrast != DEFAULT_CONTRAST:
        options += f" --contrast {contrast}"
    if voxel_size_mm is not None:
        images += " ({} mm voxels)".format(" x ".join(f"{v:g}" for v in voxel_size_mm))
        options += ' --voxel_size_mm "[{}]"'.format(",".join(f"{v:g}" for v in voxel_size_mm))
    return _README.format(images=images, options=options)


def _participant(seed: int, number: int) -> tuple[str, str]:
    rng = np.random.default_rng([seed, number, 1])
    age = round(float(rng.uniform(36.0, 100.0)), 1)
    sex = "F" if rng.random() < 0.56 else "M"
    return (f"{age:.0f}" if age.is_integer() else f"{age:.1f}"), sex


def _dataset_description() -> dict:
    return {
        "Name": DEMO_NAME,
        "BIDSVersion": "1.2.1",
        "License": "CC0",
        "Authors": ["pvs_bundle synthetic data generator (scripts/data/demo_data.py)"],
        "HowToAcknowledge": (
            "Synthetic data, no acknowledgement needed. It mirrors the layout of OpenNeuro ds005595 "
            "(doi:10.18112/openneuro.ds005595.v1.0.0, Chai et al.), whose authors did not make it; "
            "anatomy from the MNI ICBM152 2009 templates shipped with nilearn."
        ),
        "Funding": [],
        "DatasetDOI": "n/a",
    }


def _parcellation_description() -> dict:
    return {
        "Name": "Synthetic parcellation of the pvs_bundle demo dataset (FreeSurferColorLUT labels, not real data)",
        "BIDSVersion": "1.2.1",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": GENERATOR, "Version": str(GENERATOR_VERSION)}],
    }


def _sidecar(header: nib.Nifti1Header) -> str:
    """The JSON sidecar of a NIfTI file, in the exact format of the ds005595 sidecars."""
    dim, pixdim, code = header["dim"], header["pixdim"], int(header["datatype"])
    lines = [
        "{",
        f'    "data_type": "{nib.nifti1.data_type_codes.label[code].upper()}",',
        '    "dimensions": {',
        ",\n".join(f'        "dim{k}": {int(dim[k])}' for k in range(1, 5)),
        "    },",
        f'    "datatype": {code},',
        '    "pixel_dimensions": {',
        ",\n".join(f'        "pixdim{k}": {float(pixdim[k]):.6f}' for k in range(1, 5)),
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, sidecar: bool = True) -> None:
    """Write ``path`` as int16 NIfTI (qform and sform code 1, mm, TR in pixdim[4]) and, if asked, its JSON sidecar."""
    image = nib.Nifti1Image(data.astype(np.int16), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    image.header["pixdim"][4] = REPETITION_TIME_S
    write_nifti_gz(image, path)
    if sidecar:
        _write_text(path.with_name(path.name.removesuffix(".nii.gz") + ".json"), _sidecar(image.header))


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
