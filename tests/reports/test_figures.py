import numpy as np
import pytest
from PIL import Image

from scripts.reports.figures import choose_slices, overlay_rgba, save_visualization_grid, view_slice

SHAPE = (10, 20, 30)


def case(subject: str, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[3:5, 8:12, 10:20] = 1
    pred = np.roll(label, 1, axis=0)
    return {"subject": subject, "image": rng.random(SHAPE, dtype=np.float32), "label": label, "pred": pred}


def test_choose_slices_picks_the_most_reference_voxels():
    label = np.zeros(SHAPE)
    for point in [(3, 5, 7), (3, 6, 7), (3, 5, 8), (8, 15, 20)]:
        label[point] = 1
    assert choose_slices(label) == {"axial": 7, "coronal": 5, "sagittal": 3}


def test_choose_slices_falls_back_to_the_middle():
    assert choose_slices(np.zeros(SHAPE)) == {"axial": 15, "coronal": 10, "sagittal": 5}


@pytest.mark.parametrize(
    ("view", "index", "shape", "marker"),
    [("axial", 3, (20, 10), (2, 1)), ("coronal", 2, (30, 10), (3, 1)), ("sagittal", 1, (30, 20), (3, 2))],
)
def test_view_slice_puts_superior_or_anterior_on_rows(view, index, shape, marker):
    volume = np.zeros(SHAPE)
    volume[1, 2, 3] = 1
    plane = view_slice(volume, view, index)
    assert plane.shape == shape
    assert plane[marker] == 1


def test_overlap_is_yellow():
    ones = np.ones((2, 3))
    assert overlay_rgba(ones, ones)[0, 0, :3].tolist() == [1.0, 1.0, 0.0]


def test_grid_is_saved_as_jpeg_at_300_dpi(tmp_path):
    path = tmp_path / "figures" / "test_grid.jpg"
    save_visualization_grid([case("sub-001", 0), case("sub-002", 1)], path)
    with Image.open(path) as image:
        assert image.format == "JPEG"
        assert tuple(round(d) for d in image.info["dpi"]) == (300, 300)
    assert [p.name for p in path.parent.iterdir()] == ["test_grid.jpg"]


def test_grid_rejects_arrays_of_different_shapes(tmp_path):
    bad = case("sub-001", 0)
    bad["pred"] = bad["pred"][:, :, :-1]
    with pytest.raises(ValueError, match="one shape"):
        save_visualization_grid([bad], tmp_path / "grid.jpg")
