"""The generalisation benchmark's held-out sets: generated per contrast and voxel size, every subject a test case."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO_ROOT

from scripts.data.datalist import load_or_create_datalist
from scripts.data.demo import MARKER_NAME, empty_subjects
from scripts.evaluation.case_metrics import case_metrics
from scripts.evaluation.summary import write_results

SPEC = importlib.util.spec_from_file_location("generalisation", REPO_ROOT / "benchmarks" / "generalisation.py")
generalisation = sys.modules.setdefault("generalisation", importlib.util.module_from_spec(SPEC))
SPEC.loader.exec_module(generalisation)  # a script, not a package: loaded from its file


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "model.pt").write_bytes(b"")  # parse_model only checks that the checkpoint is there
    return folder


@pytest.mark.parametrize(
    ("text", "label", "size"),
    [("0.8", "0.8", None), ("1", "1.0", (1.0, 1.0, 1.0)), ("0.8x0.8x1.6", "0.8x0.8x1.6", (0.8, 0.8, 1.6))],
)
def test_voxel_sizes_are_labelled_and_0_8_is_the_demo_grid(text: str, label: str, size: tuple | None) -> None:
    assert generalisation.parse_voxel_size(text) == (label, size)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "demo"], "--model must be NAME=CONFIG_OVERLAYS:CKPT_DIR"),
        (["--model", "demo=configs/nope.json:{models}"], "config overlay(s) ['configs/nope.json'] do not exist"),
        (["--model", "demo=configs/demo.json:/nonexistent"], "/nonexistent/model.pt does not exist"),
        (["--model", "demo=configs/demo.json:{models}", "--seed", "0"], "--seed must not be 0"),
        (["--model", "demo=configs/demo.json:{models}", "--voxel_sizes", "1x2"], "not '1x2'"),
        (["--model", "demo=configs/demo.json:{models}", "--voxel_sizes", "9"], "three numbers in [0.5, 4.0] mm"),
    ],
)
def test_bad_arguments_are_refused_with_the_fix(
    model_dir: Path, capsys: pytest.CaptureFixture, argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit):
        generalisation.parse_args([a.format(models=model_dir) for a in argv])
    assert message in capsys.readouterr().err


def test_quick_is_one_set_of_two_subjects(model_dir: Path) -> None:
    args = generalisation.parse_args(["--quick", "--model", f"demo=configs/demo.json:{model_dir}"])
    assert [s.name for s in args.sets] == ["T2w_1.0mm"] and args.n_subjects == 2
    assert args.models == [generalisation.Model("demo", ("configs/demo.json",), model_dir.resolve())]


def test_a_held_out_set_lists_every_subject_as_a_test_case(model_dir: Path, tmp_path: Path) -> None:
    argv = ["--model", f"demo=configs/demo.json:{model_dir}", "--contrasts", "FLAIR", "--voxel_sizes", "1.2"]
    argv += ["--n_subjects", "4", "--shape", "40", "48", "44", "--work_dir", str(tmp_path / "work")]
    args = generalisation.parse_args(argv)
    (held_out,) = args.sets
    dataset_dir, datalist_file = generalisation.prepare_set(args, held_out)
    assert json.loads((dataset_dir / MARKER_NAME).read_text())["seed"] == generalisation.DEFAULT_SEED
    saved = json.loads(datalist_file.read_text())
    assert saved["training"] == saved["validation"] == []
    assert [c["id"] for c in saved["test"]] == ["sub-001", "sub-002", "sub-003", "sub-004"]
    assert empty_subjects(4, generalisation.DEFAULT_SEED)  # a subject without PVS is scored too
    image = nib.load(dataset_dir / saved["test"][0]["image"])
    assert saved["test"][0]["image"].endswith("_FLAIR.nii.gz") and image.header.get_zooms() == (1.2, 1.2, 1.2)
    # the bundle's evaluation reads it as it is (a saved datalist is never re-split)
    datalist = load_or_create_datalist(dataset_dir, datalist_file, must_exist=True)
    assert len(datalist["test"]) == 4 and all(Path(c["label"]).is_file() for c in datalist["test"])


def test_the_table_gives_dice_over_the_cases_with_pvs_beside_all_cases(tmp_path: Path) -> None:
    # the bundle's own summary of three cases: one PVS found whole, one half found, one PVS-free with a speck
    ref, half, empty, speck = (np.zeros((8, 8, 8), bool) for _ in range(4))
    ref[2, 2, 2:6] = half[2, 2, 2:4] = speck[6, 6, 6] = True
    cases = [(ref, ref), (half, ref), (speck, empty)]
    rows = [{"subject": f"sub-00{i}", **case_metrics(p, r, (1.0, 1.0, 1.0))} for i, (p, r) in enumerate(cases, 1)]
    files = {"per_case_csv": "t.csv", "per_case_json": generalisation.PER_CASE_FILE, "agreement_figure": "a.png"}
    write_results(rows, tmp_path, {**files, "summary": generalisation.SUMMARY_FILE})
    figures = generalisation.read_figures(tmp_path)
    assert figures["dice_mean"] == pytest.approx((1 + 2 / 3 + 0) / 3, abs=1e-4)  # the speck scores 0
    assert figures["n_with_pvs"] == 2 and figures["dice_with_pvs"] == pytest.approx((1 + 2 / 3) / 2, abs=1e-4)
    assert (figures["precision_with_pvs"], figures["recall_with_pvs"]) == pytest.approx((1.0, 0.75))
    result = {"model": "m", "contrast": "T2w", "voxel_mm": "0.8", "seconds": 3.0, **figures}
    host = {"gpu": None, "cpu": "cpu", "cpu_cores": 2, "cpu_bf16": "none", "torch": "x"}
    row = generalisation.markdown([result], {"seed": 1, "n_subjects": 3, "shape": [8, 8, 8]}, host).splitlines()[-1]
    assert row.startswith("| m | T2w | 0.8 | 3 | 0.556 ± ") and "| 0.833 (2) | 1.00 / 0.75 |" in row
    # the half-found PVS loses a third of its Dice to voxels drawn too short: a sixth over the two cases with PVS
    assert figures["dice_lost_narrow_with_pvs"] == pytest.approx(1 / 6, abs=1e-4)
    assert "| 1.00 / 0.75 | 0.00 / 0.17 / 0.00 / 0.00 |" in row
