"""Issue 23's ablation script: its choices refused by name, and its scoring of hand-built masks."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))  # the script imports its sibling cpu_recipe
SPEC = importlib.util.spec_from_file_location("ablation", REPO_ROOT / "benchmarks" / "ablation.py")
ablation = sys.modules.setdefault("ablation", importlib.util.module_from_spec(SPEC))
SPEC.loader.exec_module(ablation)  # a script, not a package: loaded from its file


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--train", "base,focal"], "--train must be a comma-separated subset of base,skeleton_recall"),
        (["--post", "erode"], "--post must be a comma-separated subset of stored,hysteresis"),
        (["--cpu_minutes", "0"], "--cpu_minutes must be a positive number"),
    ],
)
def test_unknown_variants_and_budgets_are_refused_by_name(argv, message, capsys):
    with pytest.raises(SystemExit):
        ablation.parse_args(argv)
    assert message in capsys.readouterr().err


def test_held_out_defaults_are_not_the_demo_generators():
    args = ablation.parse_args([])
    assert args.pvs_diameter_mm != 1.5 and args.pvs_count != [20, 110] and args.cpu_minutes == 30.0
    assert len(args.seeds) == 2


def tubes(n: int) -> np.ndarray:
    """A 24³ reference with ``n`` straight tubes of 18 voxels, 6 voxels apart."""
    ref = np.zeros((24, 24, 24), dtype=np.uint8)
    for k in range(n):
        ref[2:20, 4 + 6 * k, 4] = 1
    return ref


def write_cases(folder: Path, pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[list[dict], dict[str, Path]]:
    """Save each (reference, prediction) pair as NIfTI at 0.8 mm; return the test cases and their masks by id."""
    affine = np.diag([0.8, 0.8, 0.8, 1.0])
    test, masks = [], {}
    for i, (ref, pred) in enumerate(pairs):
        case = {"id": f"sub-{i}", "label": f"sub-{i}_ref.nii.gz"}
        nib.save(nib.Nifti1Image(ref, affine), folder / case["label"])
        masks[case["id"]] = folder / f"sub-{i}_pred.nii.gz"
        nib.save(nib.Nifti1Image(pred, affine), masks[case["id"]])
        test.append(case)
    return test, masks


def test_scores_count_fragments_and_count_agreement(tmp_path: Path):
    """Three cases with 1, 2 and 3 tubes; the second prediction breaks one tube in two: one fragment, counts 1/3/3
    against 1/2/3, Dice below 1 only there."""
    pairs = [(tubes(n), tubes(n)) for n in (1, 2, 3)]
    pairs[1][1][10, 4, 4] = 0  # a gap of one voxel: two pieces of one PVS
    test, masks = write_cases(tmp_path, pairs)
    scores = ablation.score(masks, tmp_path, test)
    assert scores["ref_count"] == 6 and scores["pred_count"] == 7
    assert scores["det_fragments"] == 1 and scores["det_specks"] == 0
    assert scores["dice"] == pytest.approx((1 + 2 * 35 / 71 + 1) / 3)
    assert 0.5 < scores["count_icc"] < 1.0


def test_cases_without_pvs_are_reported_apart(tmp_path: Path):
    """A PVS-free case with one predicted speck scores Dice 0 and drags the mean over cases; ``dice_with_pvs`` is the
    mean over the cases with PVS alone, and the speck is counted in ``pvs_in_pvs_free``."""
    pairs = [(tubes(n), tubes(n)) for n in (2, 0, 0)]
    pairs[0][1][2:10, 4, 4] = 0  # the first tube found in part: 10 of its 18 voxels
    pairs[1][1][12, 12, 12] = 1  # a speck in a PVS-free case
    test, masks = write_cases(tmp_path, pairs)
    scores = ablation.score(masks, tmp_path, test)
    first = 2 * (10 + 18) / (10 + 18 + 36)  # predicted 28 voxels, all inside the 36 of the reference
    assert scores["dice_with_pvs"] == pytest.approx(first)
    assert scores["dice"] == pytest.approx((first + 0.0 + 1.0) / 3)
    assert scores["pvs_free_cases"] == 2 and scores["pvs_in_pvs_free"] == 1


def test_extra_test_set_holds_every_subject_and_is_written_once(tmp_path: Path):
    """``--extra_test``: the held-out subjects of one setting, all of them test cases (those without PVS too), written
    once for the same settings and again for another seed."""
    pvs = ablation.PVSSettings(0.9, (40, 150))
    data = tmp_path / "data_3_extra"
    cases = ablation.extra_test_set(data, 3, [48, 56, 40], 1003, pvs)
    assert [case["id"] for case in cases] == ["sub-001", "sub-002", "sub-003"]
    assert all((data / case["image"]).is_file() and (data / case["label"]).is_file() for case in cases)
    stamp = (data / cases[0]["image"]).stat().st_mtime_ns
    assert ablation.extra_test_set(data, 3, [48, 56, 40], 1003, pvs) == cases
    assert (data / cases[0]["image"]).stat().st_mtime_ns == stamp  # the same settings: not written again
    ablation.extra_test_set(data, 3, [48, 56, 40], 1004, pvs)
    assert (data / cases[0]["image"]).stat().st_mtime_ns != stamp  # another seed: written anew
