"""Tests of the synthetic ds005595-style demo dataset: layout, determinism, PVS geometry, contrast, arguments."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from scripts.data.demo import MARKER_NAME, empty_subjects, ensure_demo_dataset, generate_dataset, synthesize_subject
from scripts.data.demo.anatomy import BRAIN_CENTRE_MM, TISSUE_LABELS, tissue_labels
from scripts.data.demo.bids_files import DEMO_NAME
from scripts.data.demo.grid import FULL_SHAPE
from scripts.data.demo.parcellation import parcellation
from scripts.data.demo.pvs import BASAL_GANGLIA_BOX_MM, CENTRUM_SEMIOVALE_BOX_MM, DIAMETER_RANGE_MM, LENGTH_RANGE_MM
from scripts.regions import DEFAULT_REGIONS, region_codes, region_map

SHAPE = (64, 80, 72)  # non-cubic, so axis mix-ups show
TINY = (40, 48, 44)
N_SUBJECTS = 6
VOXEL_MM = 0.8
REAL_SIDECAR = """{
    "data_type": "INT16",
    "dimensions": {
        "dim1": 208,
        "dim2": 300,
        "dim3": 320,
        "dim4": 1
    },
    "datatype": 4,
    "pixel_dimensions": {
        "pixdim1": 0.799998,
        "pixdim2": 0.800000,
        "pixdim3": 0.800000,
        "pixdim4": 3.200000
    }
}
"""
REAL_DESCRIPTION_KEYS = ["Name", "BIDSVersion", "License", "Authors", "HowToAcknowledge", "Funding", "DatasetDOI"]
IMAGE_RE = re.compile(r"sub-(\d{3})/anat/sub-\1_T2w\.(nii\.gz|json)")
MASK_RE = re.compile(r"derivatives/mask/sub-(\d{3})/sub-\1_desc-mask_PVS\.(nii\.gz|json)")
SEG_RE = re.compile(
    r"derivatives/synthseg/(sub-(\d{3})/anat/sub-\2_desc-synthseg_dseg\.nii\.gz|dataset_description\.json)"
)
TOP_LEVEL = {"dataset_description.json", "participants.json", "participants.tsv", "README.txt", MARKER_NAME}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("demo") / "ds", n_subjects=N_SUBJECTS, shape=SHAPE, seed=0)


def relative_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def masks(root: Path) -> list[nib.Nifti1Image]:
    return [nib.load(p) for p in sorted(root.glob("derivatives/mask/sub-*/*_desc-mask_PVS.nii.gz"))]


def components(mask_image: nib.Nifti1Image) -> list[dict]:
    """Per 26-connected component: voxel count, centroid (mm), principal axis, length and width (mm), border."""
    mask = np.asarray(mask_image.dataobj) > 0
    affine = mask_image.affine
    labels, _ = ndimage.label(mask, structure=ndimage.generate_binary_structure(3, 3))
    found = []
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        voxels = np.argwhere(labels[box] == k) + [s.start for s in box]
        mm = voxels @ affine[:3, :3].T + affine[:3, 3]
        centroid = mm.mean(axis=0)
        axis = np.linalg.svd(mm - centroid, full_matrices=False)[2][0]
        along = (mm - centroid) @ axis
        length = np.ptp(along) + VOXEL_MM  # extent of voxel centres plus one voxel
        width = 2 * np.sqrt(len(voxels) * VOXEL_MM**3 / (np.pi * length))  # cylinder of the same volume
        border = (voxels.min(axis=0) == 0).any() or (voxels.max(axis=0) == np.array(mask.shape) - 1).any()
        found.append(
            {"n": len(voxels), "centroid": centroid, "axis": axis, "length": length, "width": width, "border": border}
        )
    return found


def measurable(dataset: Path) -> list[dict]:
    """Components of at least 5 voxels (fragments of sub-voxel tubes excluded) not touching the grid border."""
    return [c for image in masks(dataset) for c in components(image) if c["n"] >= 5 and not c["border"]]


def angle_deg(axis: np.ndarray, reference: np.ndarray) -> float:
    cosine = abs(axis @ reference) / np.linalg.norm(reference)
    return float(np.degrees(np.arccos(min(1.0, cosine))))


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    first = relative_files(generate_dataset(tmp_path / "a", n_subjects=2, shape=TINY, seed=3))
    second = relative_files(generate_dataset(tmp_path / "b", n_subjects=2, shape=TINY, seed=3))
    assert first == second


def test_different_seeds_give_different_images(tmp_path: Path) -> None:
    first = relative_files(generate_dataset(tmp_path / "a", n_subjects=1, shape=TINY, seed=3))
    second = relative_files(generate_dataset(tmp_path / "b", n_subjects=1, shape=TINY, seed=4))
    assert first["sub-001/anat/sub-001_T2w.nii.gz"] != second["sub-001/anat/sub-001_T2w.nii.gz"]


def test_layout_mirrors_ds005595_names(dataset: Path) -> None:
    files = relative_files(dataset)
    subjects = [f"{i:03d}" for i in range(1, N_SUBJECTS + 1)]
    nested = sorted(f for f in files if "/" in f)
    assert set(files) - set(nested) == TOP_LEVEL
    assert all(IMAGE_RE.fullmatch(f) or MASK_RE.fullmatch(f) or SEG_RE.fullmatch(f) for f in nested), nested
    assert sorted({m.group(1) for f in nested if (m := IMAGE_RE.fullmatch(f))}) == subjects
    assert sorted({m.group(1) for f in nested if (m := MASK_RE.fullmatch(f))}) == subjects
    assert len(nested) == 5 * N_SUBJECTS + 1
    assert not (dataset / "derivatives" / "mask" / "dataset_description.json").exists()


def test_dataset_metadata_mirrors_ds005595_format(dataset: Path) -> None:
    description = json.loads((dataset / "dataset_description.json").read_text(encoding="utf-8"))
    assert list(description) == REAL_DESCRIPTION_KEYS
    assert description["Name"] == DEMO_NAME and "ds005595" in description["Name"]
    assert description["License"] == "CC0"
    assert "Chai" not in " ".join(description["Authors"])
    participants_json = json.loads((dataset / "participants.json").read_text(encoding="utf-8"))
    assert list(participants_json) == ["participant_id", "age", "sex"]
    rows = (dataset / "participants.tsv").read_bytes().decode("utf-8").split("\r\n")  # CRLF, as the real file
    assert rows[0] == "participant_id\tage\tsex"
    ids, ages, sexes = zip(*(row.split("\t") for row in rows[1:]), strict=True)
    assert list(ids) == [f"sub-{i:03d}" for i in range(1, N_SUBJECTS + 1)]
    assert all(36 <= float(age) <= 100 for age in ages)
    assert set(sexes) <= {"M", "F"}


def test_image_and_mask_share_grid_and_types(dataset: Path) -> None:
    for image_path in sorted(dataset.glob("sub-*/anat/*_T2w.nii.gz")):
        sid = image_path.parent.parent.name
        image = nib.load(image_path)
        mask = nib.load(dataset / "derivatives" / "mask" / sid / f"{sid}_desc-mask_PVS.nii.gz")
        assert image.shape == mask.shape == SHAPE
        np.testing.assert_array_equal(image.affine, mask.affine)
        assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
        np.testing.assert_allclose(image.header.get_zooms(), (0.799998, 0.8, 0.8), rtol=1e-6)
        assert image.get_data_dtype() == np.int16 and mask.get_data_dtype() == np.int16
        assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
        values = np.asarray(image.dataobj)
        assert values.min() >= 0 and 800 < values.max() < 2500


def test_sidecars_describe_their_files_in_the_real_format(dataset: Path) -> None:
    real_format = re.sub(r"\d+(\.\d+)?", "N", REAL_SIDECAR)
    # ds005595's images and masks; the demo's parcellation (derivatives/synthseg) is not part of ds005595
    for nifti in sorted(p for p in dataset.rglob("*.nii.gz") if "synthseg" not in p.parts):
        text = nifti.with_name(nifti.name.replace(".nii.gz", ".json")).read_text(encoding="utf-8")
        assert re.sub(r"\d+(\.\d+)?", "N", text) == real_format
        sidecar, header = json.loads(text), nib.load(nifti).header
        assert [sidecar["dimensions"][f"dim{k}"] for k in range(1, 5)] == [*SHAPE, 1]
        assert sidecar["datatype"] == int(header["datatype"]) == 4 and sidecar["data_type"] == "INT16"
        pixdims = [sidecar["pixel_dimensions"][f"pixdim{k}"] for k in range(1, 5)]
        np.testing.assert_allclose(pixdims, header["pixdim"][1:5], atol=5e-7)


def test_full_grid_sidecars_are_byte_identical_to_ds005595(tmp_path: Path) -> None:
    root = generate_dataset(tmp_path / "ds", n_subjects=1, shape=FULL_SHAPE, seed=0)
    assert (root / "sub-001" / "anat" / "sub-001_T2w.json").read_text(encoding="utf-8") == REAL_SIDECAR
    mask_sidecar = root / "derivatives" / "mask" / "sub-001" / "sub-001_desc-mask_PVS.json"
    assert mask_sidecar.read_text(encoding="utf-8") == REAL_SIDECAR


def test_pvs_widths_and_lengths_lie_in_the_stated_ranges(dataset: Path) -> None:
    found = measurable(dataset)
    assert len(found) >= 20
    lengths = np.array([c["length"] for c in found])
    widths = np.array([c["width"] for c in found])
    # Voxelisation tolerance: one voxel on lengths, half a voxel on widths.
    assert LENGTH_RANGE_MM[0] - VOXEL_MM <= lengths.min() and lengths.max() <= LENGTH_RANGE_MM[1] + VOXEL_MM
    assert DIAMETER_RANGE_MM[0] - VOXEL_MM / 2 <= widths.min() and widths.max() <= DIAMETER_RANGE_MM[1] + VOXEL_MM / 2
    assert np.median(lengths) > 2 * np.median(widths)  # tubes, not blobs


def test_centrum_semiovale_pvs_run_radially(dataset: Path) -> None:
    centre = np.array(BRAIN_CENTRE_MM)
    elongated = [c for c in measurable(dataset) if c["length"] >= 2 * c["width"]]
    cso = [c for c in elongated if c["centroid"][2] >= CENTRUM_SEMIOVALE_BOX_MM[2][0] - 1]
    angles = [angle_deg(c["axis"], c["centroid"] - centre) for c in cso]
    assert len(angles) >= 5
    assert np.mean(np.array(angles) < 30) >= 0.8


def test_basal_ganglia_pvs_run_vertically(dataset: Path) -> None:
    (x_lo, x_hi), (y_lo, y_hi), (z_lo, z_hi) = BASAL_GANGLIA_BOX_MM
    elongated = [c for c in measurable(dataset) if c["length"] >= 2 * c["width"]]
    bg = [
        c
        for c in elongated
        if x_lo - 1 <= abs(c["centroid"][0]) <= x_hi + 1
        and y_lo - 1 <= c["centroid"][1] <= y_hi + 1
        and z_lo - 1 <= c["centroid"][2] <= z_hi + 1
    ]
    angles = [angle_deg(c["axis"], np.array([0.0, 0.0, 1.0])) for c in bg]
    assert len(angles) >= 5
    assert np.mean(np.array(angles) < 30) >= 0.8


def test_some_subjects_have_no_pvs_and_most_have_some(dataset: Path) -> None:
    voxel_counts = [int(np.asarray(image.dataobj).sum()) for image in masks(dataset)]
    empty = [i + 1 for i, count in enumerate(voxel_counts) if count == 0]
    assert empty and sorted(empty) == sorted(empty_subjects(N_SUBJECTS, seed=0))
    assert len(empty) < N_SUBJECTS / 2


@pytest.mark.parametrize("n_subjects", [4, 5, 16, 50, 200])
def test_datasets_of_four_or_more_have_about_one_empty_subject_in_six(n_subjects: int) -> None:
    for seed in range(5):
        empty = empty_subjects(n_subjects, seed)
        assert 1 <= len(empty) <= max(1, round(n_subjects / 6))
        assert empty <= set(range(1, n_subjects + 1))


def test_t2_contrast_orders_csf_above_gm_above_wm() -> None:
    subject = synthesize_subject(2, seed=0, shape=SHAPE)
    labels = tissue_labels(subject.warp, SHAPE)
    outside_pvs = subject.mask == 0
    means = {t: subject.image[(labels == v) & outside_pvs].mean() for t, v in TISSUE_LABELS.items()}
    assert means["csf"] > 1.3 * means["gm"], means
    assert means["gm"] > 1.2 * means["wm"], means


def test_pvs_are_csf_bright_in_the_image() -> None:
    subject = synthesize_subject(1, seed=0, shape=SHAPE)
    labels = tissue_labels(subject.warp, SHAPE)
    wm = subject.image[(labels == TISSUE_LABELS["wm"]) & (subject.mask == 0)]
    assert subject.tubes and subject.image[subject.mask > 0].mean() > 1.5 * wm.mean()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_subjects": 0}, "n_subjects must be >= 1, not 0"),
        ({"n_subjects": 1000}, "n_subjects must be <= 999"),
        ({"n_subjects": "3"}, "n_subjects must be an int, not '3'"),
        ({"shape": (64, 0, 72)}, "shape must be three positive ints, not (64, 0, 72)"),
        ({"shape": (64, 80)}, "shape must be three positive ints, not (64, 80)"),
        ({"shape": (64.0, 80, 72)}, "shape must be three positive ints, not (64.0, 80, 72)"),
        ({"seed": -1}, "seed must be a non-negative int, not -1"),
    ],
)
def test_bad_arguments_are_refused_with_the_bad_value(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        generate_dataset(tmp_path / "ds", **kwargs)
    assert not (tmp_path / "ds").exists()


def test_refuses_a_foreign_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=rf"{re.escape(str(tmp_path))}.*overwrite=True"):
        generate_dataset(tmp_path, n_subjects=1, shape=TINY)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_overwrite_writes_into_a_foreign_directory_and_keeps_other_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    generate_dataset(tmp_path, n_subjects=1, shape=TINY, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert (tmp_path / "sub-001" / "anat" / "sub-001_T2w.nii.gz").is_file()


def test_ensure_is_idempotent(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    assert ensure_demo_dataset(root, n_subjects=2, shape=TINY) == str(root)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert ensure_demo_dataset(root, n_subjects=2, shape=TINY) == str(root)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


def test_ensure_regenerates_an_interrupted_dataset(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    ensure_demo_dataset(root, n_subjects=2, shape=TINY)
    expected = relative_files(root)
    (root / MARKER_NAME).unlink()
    (root / "sub-002" / "anat" / "sub-002_T2w.nii.gz").unlink()
    ensure_demo_dataset(root, n_subjects=2, shape=TINY)
    assert relative_files(root) == expected


def test_ensure_regenerates_for_other_parameters(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    ensure_demo_dataset(root, n_subjects=2, shape=TINY)
    ensure_demo_dataset(root, n_subjects=1, shape=TINY)
    assert json.loads((root / MARKER_NAME).read_text())["n_subjects"] == 1
    assert not (root / "sub-002").exists() and not (root / "derivatives" / "mask" / "sub-002").exists()


@pytest.mark.slow
def test_command_line_writes_a_dataset(tmp_path: Path) -> None:
    bundle_root = Path(__file__).resolve().parents[2] / "pvs_bundle"
    command = [sys.executable, "-m", "scripts.data.demo_data", "--out_dir", str(tmp_path / "ds"), "--n_subjects", "1"]
    result = subprocess.run(
        [*command, "--seed", "5", "--shape", "[40,48,44]"], cwd=bundle_root, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "ds" / MARKER_NAME).read_text())["shape"] == [40, 48, 44]
    assert nib.load(tmp_path / "ds" / "sub-001" / "anat" / "sub-001_T2w.nii.gz").shape == (40, 48, 44)


def test_parcellation_puts_the_drawn_pvs_in_their_regions() -> None:
    regions = region_map(DEFAULT_REGIONS)
    expected = {"basal_ganglia": "basal_ganglia", "centrum_semiovale": "cerebral_white_matter"}
    found = []
    for index in (1, 2, 4):  # several subjects, so that enough tubes of both regions are drawn
        subject = synthesize_subject(index, seed=0, shape=SHAPE)
        labels = parcellation(subject.warp, SHAPE)
        assert labels.shape == SHAPE and labels.dtype == np.int16
        codes = region_codes(labels, regions, "demo")
        for tube in subject.tubes:
            middle = (np.add(tube.start_mm, tube.end_mm) / 2 - subject.affine[:3, 3]) / np.diag(subject.affine)[:3]
            found.append(regions.names[codes[tuple(np.rint(middle).astype(int))]] == expected[tube.region])
    assert len(found) >= 10 and np.mean(found) >= 0.9


def test_held_out_pvs_settings_draw_thinner_and_more_pvs_and_are_recorded(tmp_path):
    from scripts.data.demo import PVSSettings

    default = synthesize_subject(3, seed=7, shape=SHAPE)
    assert synthesize_subject(3, seed=7, shape=SHAPE, pvs=PVSSettings()).tubes == default.tubes  # the demo's own
    held_out = synthesize_subject(3, seed=7, shape=SHAPE, pvs=PVSSettings(1.0, (150, 200)))
    assert len(held_out.tubes) > len(default.tubes)
    assert np.median([t.diameter_mm for t in held_out.tubes]) < np.median([t.diameter_mm for t in default.tubes])
    generate_dataset(tmp_path, n_subjects=1, shape=SHAPE, seed=7, pvs=PVSSettings(1.0, (150, 200)))
    marker = json.loads((tmp_path / MARKER_NAME).read_text())
    assert marker["pvs"] == {"diameter_median_mm": 1.0, "count_range": [150, 200]}
    with pytest.raises(ValueError, match=r"diameter_median_mm must lie in \[0.5, 3.0\] mm"):
        PVSSettings(0.2)
    with pytest.raises(ValueError, match="count_range must satisfy 1 <= low <= high"):
        PVSSettings(1.5, (50, 20))
