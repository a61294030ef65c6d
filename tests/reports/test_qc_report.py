"""The measurement stage on tiny synthetic cases: census and region tables, and the QC report rendered in Chromium."""

import csv
import json
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pytest
from conftest import synthetic_case
from PIL import Image

from scripts.measurement.census import CENSUS_COLUMNS
from scripts.measurement.measure import REGION_COLUMNS, PVSMeasurement
from scripts.regions import DEFAULT_REGIONS
from scripts.reports.qc_report import robust_outliers

REGIONS = DEFAULT_REGIONS
SHAPE = (40, 48, 36)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHECK_SCRIPT = """<script>window.addEventListener('load', function(){
var broken = Array.from(document.images).filter(function(i){return !i.complete || i.naturalWidth === 0;}).length;
document.body.setAttribute('data-images', document.images.length);
document.body.setAttribute('data-broken', broken);
var table = document.querySelector('table.sortable'), th = table.tHead.rows[0].cells[1];
th.click(); var ascending = table.tBodies[0].rows[0].cells[0].textContent;
th.click(); document.body.setAttribute('data-sorted', ascending + '|' + table.tBodies[0].rows[0].cells[0].textContent);
});</script></body>"""


def parcellation(shape):
    """Left / right white matter, a putamen block in the middle, label 999 (not in the map) in one corner."""
    labels = np.zeros(shape, dtype=np.int16)
    labels[4:-4, 4:-4, 4:-4] = 2
    labels[shape[0] // 2 : -4, 4:-4, 4:-4] = 41
    labels[14:26, 16:32, 4:-4] = 12
    labels[4:8, 4:8, 4:8] = 999
    return labels


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    root = tmp_path_factory.mktemp("measure")
    affine = np.diag([0.8, 0.9, 1.1, 1.0])
    parcellations = root / "derivatives" / "synthseg"
    seg_affine = np.diag([1.6, 1.8, 1.1, 1.0])  # another grid of the same head: 2 x 2 x 1 voxels of the image
    seg_affine[:3, 3] = (0.4, 0.45, 0.0)
    coarse = parcellation(SHAPE)[::2, ::2, :]
    stage = PVSMeasurement(
        REGIONS,
        root / "out",
        parcellation_dir=parcellations,
        patch_size=(48, 48, 48),
        pixdim=(0.8, 0.8, 0.8),
        roi={"erosion_mm": 1.6},  # the tubes reach the brain's edge: some of them lie outside the ROI
    )
    burden = {}
    for number, n_tubes in ((1, 6), (2, 4), (3, 0), (4, 5)):
        case = f"sub-00{number}"
        image, mask = synthetic_case(SHAPE, seed=number, n_tubes=n_tubes)
        path = root / "in" / f"{case}_T2w.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(image.astype(np.int16), affine), path)
        if number != 2:
            seg = parcellations / case / "anat" / f"{case}_desc-synthseg_dseg.nii.gz"
            seg.parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(coarse, seg_affine), seg)
        head = image > 100
        prob = np.where(mask > 0, 0.9, 0.05)
        burden[case] = stage.measure_case(case, nib.load(path), path, mask > 0, prob, head)
    stage.write()
    return root / "out", burden


def test_census_and_region_tables(measured):
    out, burden = measured
    census = list(csv.DictReader((out / "pvs_census.csv").open()))
    assert list(census[0]) == list(CENSUS_COLUMNS)
    assert json.loads((out / "pvs_census.json").read_text())[0]["case"] == census[0]["case"]
    by_case = {case: [r for r in census if r["case"] == case] for case in burden}
    # PVS are counted inside the ROI (the brain eroded by 2 mm); the parts outside are rows of region "outside"
    counted = {case: [r for r in rows if r["region"] != "outside"] for case, rows in by_case.items()}
    assert {case: len(rows) for case, rows in counted.items()} == {c: b["pvs_count"] for c, b in burden.items()}
    assert {case: len(by_case[case]) - len(counted[case]) for case in burden} == {
        c: b["outside_roi_count"] for c, b in burden.items()
    }
    assert sum(b["outside_roi_count"] for b in burden.values()) > 0  # the tubes reach the brain's edge
    assert {r["region"] for r in counted["sub-002"]} == {"unknown"}
    assert {r["region"] for r in by_case["sub-001"]} <= {"basal_ganglia", "cerebral_white_matter", "other", "outside"}
    assert all(float(r["prob_max"]) == 0.9 for r in census)
    regions = list(csv.DictReader((out / "pvs_regions.csv").open()))
    assert list(regions[0]) == list(REGION_COLUMNS)
    first = [r for r in regions if r["case"] == "sub-001"]
    assert [r["region"] for r in first][:3] == ["basal_ganglia", "thalamus", "cerebral_white_matter"]
    assert sum(int(r["pvs_count"]) for r in first if r["region"] != "outside") == burden["sub-001"]["pvs_count"]
    putamen = next(r for r in first if r["region"] == "basal_ganglia")
    assert float(putamen["region_volume_mm3"]) == pytest.approx(12 * 16 * 28 * 0.8 * 0.9 * 1.1, abs=0.05)  # 0.1 mm³
    assert burden["sub-001"]["brain_from_parcellation"] == 1 and burden["sub-002"]["brain_from_parcellation"] == 0
    brain = (32 * 40 * 28) * 0.8 * 0.9 * 1.1  # every non-zero label of the parcellation
    assert burden["sub-001"]["brain_volume_mm3"] == pytest.approx(brain)
    assert burden["sub-001"]["pvs_volume_fraction"] == pytest.approx(burden["sub-001"]["pvs_volume_mm3"] / brain)


def test_report_is_self_contained_and_lists_flags_and_missing_parcellations(measured):
    out, _ = measured
    text = (out / "qc_report.html").read_text()
    assert "http://" not in text and "https://" not in text
    assert text.count("data:image/png;base64,") == 5  # 4 subjects + the distributions
    assert "No parcellation for 1 case(s)" in text and "sub-002" in text
    assert "no_pvs" in text.split("id='sub-003'")[1].split("</section>")[0]
    assert "too_small" in text  # 40 x 0.8 mm < the 48 x 0.8 mm window


def test_robust_outliers():
    assert robust_outliers([1.0, 1.1, 0.9, 1.05, 5.0]) == [False, False, False, False, True]
    assert robust_outliers([1.0, float("nan"), 9.0]) == [False, False, False]
    assert robust_outliers([2.0, 2.0, 2.0, 3.0]) == [False] * 4  # zero MAD: no flag


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(measured, tmp_path):
    out, _ = measured
    page = tmp_path / "report.html"
    page.write_text((out / "qc_report.html").read_text().replace("</body>", CHECK_SCRIPT))
    screenshot = tmp_path / "screenshot.png"
    flags = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,2000",
        "--virtual-time-budget=5000",
    ]
    shot = subprocess.run([*flags, f"--screenshot={screenshot}", page.as_uri()], capture_output=True, timeout=120)
    assert shot.returncode == 0, shot.stderr[-2000:]
    pixels = np.asarray(Image.open(screenshot).convert("L"), dtype=np.float64)
    assert pixels.shape == (2000, 1280) and pixels.std() > 10  # not blank
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-images="5"' in dom.stdout and 'data-broken="0"' in dom.stdout
    ascending, descending = dom.stdout.split('data-sorted="')[1].split('"')[0].split("|")
    assert ascending == "sub-003" and descending != "sub-003"  # sorted by PVS count: sub-003 has none
