"""Classical baseline: multi-scale Frangi vesselness of bright tubes, thresholded.

PVS are CSF-bright tubes on T2w, 0.5–3 mm wide. :func:`frangi_vesselness` runs
``skimage.filters.frangi(..., black_ridges=False)`` on an intensity-normalised image:

- Scales: for a bright bar of width w, the Hessian response normalised by sigma² peaks at sigma = w / 2,
  so widths of 0.5–3 mm call for sigma 0.25–1.5 mm. The default ``sigmas_mm`` (0.5, 1.0, 1.5) starts at
  0.5 mm because thinner tubes are below the resolution of 0.8 mm voxels. Sigmas are converted to voxels
  with the geometric mean of the spacing (skimage applies one isotropic sigma per scale, so resample
  strongly anisotropic images first), floored at 0.5 voxel (smaller Gaussians alias) and de-duplicated.
- Intensity: the 0.5th and 99.5th percentiles inside the mask are mapped to 0 and 1 and values clipped,
  so that a few very bright voxels do not set Frangi's structure constant (gamma).
- Mask: a brain mask if given, else the head found by Otsu thresholding with holes filled. The filter runs
  on the mask's bounding box plus a margin of three sigmas, and vesselness outside the mask is 0.

The threshold on vesselness is chosen on training cases to maximise their mean Dice
(:func:`choose_threshold`); :func:`run_frangi_baseline` then scores the test cases with every metric of
:mod:`scripts.evaluation.case_metrics`, in each label's native grid, with the cohort agreement of PVS counts and
volumes and its figure. References are read with the reference rule of :mod:`scripts.masks`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage
from skimage.filters import frangi, threshold_otsu

from scripts.evaluation.case_metrics import case_metrics
from scripts.evaluation.detection import DEFAULT_IOU_THRESHOLD
from scripts.evaluation.metrics import overlap_from_counts
from scripts.evaluation.native_labels import load_native_label
from scripts.evaluation.summary import write_results
from scripts.masks import bounding_box, reference_mask
from scripts.nifti import check_spacing, header_spacing
from scripts.tables import SUBJECT_KEY

logger = logging.getLogger("pvs_bundle.frangi")

DEFAULT_SIGMAS_MM: tuple[float, ...] = (0.5, 1.0, 1.5)
MIN_SIGMA_VOXELS = 0.5
INTENSITY_PERCENTILES: tuple[float, float] = (0.5, 99.5)
SUMMARY_FILE = "frangi_baseline_metrics.json"
PER_CASE_CSV = "frangi_baseline_per_case.csv"
PER_CASE_JSON = "frangi_baseline_per_case.json"
AGREEMENT_FIGURE_FILE = "frangi_baseline_count_volume_agreement_300dpi.png"
RESULT_FILES: dict[str, str] = {
    "per_case_csv": PER_CASE_CSV,
    "per_case_json": PER_CASE_JSON,
    "summary": SUMMARY_FILE,
    "agreement_figure": AGREEMENT_FIGURE_FILE,
}


def sigmas_in_voxels(spacing: Sequence[float], sigmas_mm: Sequence[float] = DEFAULT_SIGMAS_MM) -> list[float]:
    """Convert Frangi scales from mm to voxels (geometric mean spacing, floored at 0.5 voxel, unique).

    Args:
        spacing: voxel spacing in mm, one value per axis.
        sigmas_mm: Gaussian scales in mm.

    Returns:
        The sorted, distinct scales in voxels.

    Raises:
        ValueError: if the spacing is invalid or a sigma is not positive.
    """
    spacing = check_spacing(spacing)
    if not sigmas_mm or not all(s > 0 for s in sigmas_mm):
        raise ValueError(f"sigmas_mm must be positive values in mm, not {sigmas_mm}.")
    mean_spacing = math.prod(spacing) ** (1 / len(spacing))
    return sorted({round(max(s / mean_spacing, MIN_SIGMA_VOXELS), 6) for s in sigmas_mm})


def head_mask(image: np.ndarray) -> np.ndarray:
    """Foreground (head) of an MR image: Otsu threshold, holes filled.

    Args:
        image: 3D intensity image.

    Returns:
        A boolean mask of the image's shape.

    Raises:
        ValueError: if the image is constant.
    """
    if np.ptp(image) == 0:
        raise ValueError("image must have varying intensities to find the head, not a constant image.")
    return ndimage.binary_fill_holes(image > threshold_otsu(image))


def normalize_intensity(
    image: np.ndarray, mask: np.ndarray, percentiles: tuple[float, float] = INTENSITY_PERCENTILES
) -> np.ndarray:
    """Map the given intensity percentiles inside ``mask`` to [0, 1], clipping outside that range.

    Args:
        image: 3D intensity image.
        mask: boolean mask of the same shape; percentiles are taken inside it.
        percentiles: low and high percentiles.

    Returns:
        The normalised image, float32.
    """
    low, high = np.percentile(image[mask], percentiles)
    scale = high - low if high > low else 1.0
    return np.clip((image.astype(np.float32) - low) / scale, 0.0, 1.0).astype(np.float32)


def frangi_vesselness(
    image: np.ndarray,
    spacing: Sequence[float],
    sigmas_mm: Sequence[float] = DEFAULT_SIGMAS_MM,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Multi-scale Frangi vesselness of bright tubes (see the module docstring for the choices).

    Args:
        image: 3D T2w intensity image.
        spacing: voxel spacing in mm.
        sigmas_mm: Gaussian scales in mm.
        mask: optional brain or foreground mask of the image's shape; default: the Otsu head mask.

    Returns:
        Vesselness in [0, 1], float32, of the image's shape; 0 outside the mask.

    Raises:
        ValueError: if the image is not 3D, the mask's shape differs or the mask is empty, or the spacing or
            sigmas are invalid.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image must be 3D, not of shape {image.shape}.")
    sigmas = sigmas_in_voxels(spacing, sigmas_mm)
    mask = head_mask(image) if mask is None else np.asarray(mask) > 0
    if mask.shape != image.shape:
        raise ValueError(f"mask must have the image's shape {image.shape}, not {mask.shape}.")
    if not mask.any():
        raise ValueError("mask must contain at least one voxel, not be empty.")
    box = bounding_box(mask, margin=math.ceil(3 * max(sigmas)))
    normalized = normalize_intensity(image[box], mask[box])
    vesselness = np.zeros(image.shape, dtype=np.float32)
    vesselness[box] = frangi(normalized, sigmas=sigmas, black_ridges=False)
    vesselness[~mask] = 0.0
    return vesselness


def default_candidates(vesselness_list: Sequence[np.ndarray], count: int = 41) -> np.ndarray:
    """Candidate thresholds: quantiles of the pooled positive vesselness, denser towards the top.

    The quantile levels are 1 - logspace(-4, 0, count): from the top 0.01 % of positive voxels (PVS are a
    small fraction of the head) down to the smallest positive value. Quantiles are taken with
    ``method="lower"`` so each candidate is an actual vesselness value.

    Args:
        vesselness_list: vesselness maps of the training cases.
        count: number of quantile levels.

    Returns:
        Sorted distinct thresholds; ``[0.0]`` if no voxel has positive vesselness.
    """
    positive = np.concatenate([np.asarray(v)[np.asarray(v) > 0].ravel() for v in vesselness_list])
    if positive.size == 0:
        return np.array([0.0])
    levels = 1.0 - np.logspace(-4, 0, count)
    return np.unique(np.quantile(positive, levels, method="lower")).astype(np.float64)


def dice_per_threshold(vesselness: np.ndarray, label: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Dice of ``vesselness > t`` against ``label`` for every candidate ``t``, from sorted values.

    Args:
        vesselness: vesselness map of one case.
        label: reference of the same shape (reference rule of :mod:`scripts.masks`).
        candidates: 1D array of thresholds.

    Returns:
        One Dice per candidate (float64), with the empty-mask conventions of :mod:`scripts.evaluation.metrics`.

    Raises:
        ValueError: if the shapes differ.
    """
    if vesselness.shape != label.shape:
        raise ValueError(f"vesselness and label must have the same shape, not {vesselness.shape} and {label.shape}.")
    values = np.sort(vesselness, axis=None)
    foreground = np.sort(vesselness[reference_mask(label)])
    predicted = values.size - np.searchsorted(values, candidates, side="right")
    true_positive = foreground.size - np.searchsorted(foreground, candidates, side="right")
    counts = np.stack([true_positive, predicted - true_positive, foreground.size - true_positive], axis=1)
    return overlap_from_counts(torch.from_numpy(counts).double(), "dice").numpy()


def choose_threshold(
    vesselness_list: Sequence[np.ndarray],
    label_list: Sequence[np.ndarray],
    candidates: Sequence[float] | np.ndarray | None = None,
) -> tuple[float, float]:
    """Pick the vesselness threshold that maximises the mean per-case Dice over training cases.

    A voxel is predicted when its vesselness is strictly greater than the threshold. Ties go to the lowest
    threshold.

    Args:
        vesselness_list: vesselness maps of the training cases.
        label_list: their references, in the same order and shapes.
        candidates: thresholds to try; default :func:`default_candidates`.

    Returns:
        The threshold and the mean training Dice it reaches.

    Raises:
        ValueError: if the lists are empty or differ in length, a shape differs, or ``candidates`` is empty.
    """
    if not vesselness_list or len(vesselness_list) != len(label_list):
        raise ValueError(
            "vesselness_list and label_list must be non-empty and of equal length, "
            f"not {len(vesselness_list)} and {len(label_list)}."
        )
    grid = default_candidates(vesselness_list) if candidates is None else np.sort(np.asarray(candidates, float))
    if grid.ndim != 1 or grid.size == 0:
        raise ValueError(f"candidates must be a non-empty 1D sequence of thresholds, not {candidates!r}.")
    pairs = zip(vesselness_list, label_list, strict=True)
    mean_dice = np.mean([dice_per_threshold(vesselness, label, grid) for vesselness, label in pairs], axis=0)
    best = int(np.argmax(mean_dice))
    return float(grid[best]), float(mean_dice[best])


def load_case(item: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Read one case's image and label NIfTI files in their native grid.

    Args:
        item: dict with ``image`` and ``label`` paths (and a ``subject`` id).

    Returns:
        The image (float32), the label (bool) and the voxel spacing in mm.

    Raises:
        ValueError: if a key is missing, or an image is not 3D or its shape differs from its label's.
    """
    missing = [key for key in ("image", "label", SUBJECT_KEY) if key not in item]
    if missing:
        raise ValueError(f"item must have the keys image, label and {SUBJECT_KEY}, not {list(item)} (lacks {missing}).")
    image_nii, label_nii = nib.load(item["image"]), nib.load(item["label"])
    if len(image_nii.shape) != 3:
        raise ValueError(f"{item['image']} must be a 3D image, not of shape {image_nii.shape}.")
    if label_nii.shape != image_nii.shape:
        raise ValueError(
            f"{item['label']} must have the shape of {item['image']}, {image_nii.shape}, not {label_nii.shape}."
        )
    image = image_nii.get_fdata(dtype=np.float32)
    label = load_native_label(item["label"]).numpy()[0] > 0  # the reference rule, as evaluation reads labels
    spacing = header_spacing(image_nii)
    return image, label, spacing


def run_frangi_baseline(
    train_items: Sequence[dict[str, Any]],
    test_items: Sequence[dict[str, Any]],
    output_dir: str | os.PathLike[str],
    sigmas_mm: Sequence[float] = DEFAULT_SIGMAS_MM,
    max_train_cases: int | None = None,
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    min_size: int = 0,
) -> dict[str, dict[str, float]]:
    """Choose a Frangi threshold on training cases, score the test cases, and write the result files.

    Writes into ``output_dir``: ``frangi_baseline_metrics.json`` (summary, with the threshold, the training
    Dice and the cohort agreement), ``frangi_baseline_per_case.csv``, ``frangi_baseline_per_case.json`` and
    ``frangi_baseline_count_volume_agreement_300dpi.png``.

    Args:
        train_items: dicts with ``image``, ``label`` and ``subject``, used to choose the threshold.
        test_items: dicts of the same form, scored.
        output_dir: directory for the result files (created if needed).
        sigmas_mm: Frangi scales in mm.
        max_train_cases: use at most this many training cases (the first ones); None uses all.
        iou_threshold: component IoU threshold of the detection metrics.
        min_size: minimum component size in voxels of the detection metrics.

    Returns:
        The summary of the test metrics, as :func:`scripts.evaluation.summary.summarize` returns it.

    Raises:
        ValueError: if there are no training or test items, ``max_train_cases`` is below 1, or a case is
            invalid.
    """
    if max_train_cases is not None and max_train_cases < 1:
        raise ValueError(f"max_train_cases must be None or >= 1, not {max_train_cases}.")
    train = list(train_items)[:max_train_cases]
    if not train or not test_items:
        raise ValueError(f"train_items and test_items must be non-empty, not {len(train)} and {len(test_items)}.")
    output = Path(output_dir)
    logger.info(
        "Frangi baseline: threshold chosen on %d training case(s), scored on %d test case(s); results into %s.",
        len(train),
        len(test_items),
        output,
    )
    vesselness_list, label_list = [], []
    for index, item in enumerate(train, 1):
        logger.info("Vesselness of training case %d/%d: %s", index, len(train), item[SUBJECT_KEY])
        image, label, spacing = load_case(item)
        vesselness_list.append(frangi_vesselness(image, spacing, sigmas_mm))
        label_list.append(label)
    threshold, train_dice = choose_threshold(vesselness_list, label_list)
    del vesselness_list, label_list
    rows = []
    logger.info("Threshold %.4g (training Dice %.3f).", threshold, train_dice)
    for index, item in enumerate(test_items, 1):
        image, label, spacing = load_case(item)
        prediction = frangi_vesselness(image, spacing, sigmas_mm) > threshold
        metrics = case_metrics(prediction, label, spacing, iou_threshold=iou_threshold, min_size=min_size)
        rows.append({SUBJECT_KEY: str(item[SUBJECT_KEY]), **metrics})
        logger.info("Test case %d/%d: %s, Dice %.3f", index, len(test_items), item[SUBJECT_KEY], metrics["dice"])
    extra = {
        "method": "frangi",
        "threshold": threshold,
        "training_dice": train_dice,
        "n_train_cases": len(train),
        "n_test_cases": len(rows),
        "sigmas_mm": list(sigmas_mm),
        "iou_threshold": iou_threshold,
        "min_size": min_size,
    }
    summary = write_results(rows, output_dir, RESULT_FILES, extra, title="Frangi baseline: prediction vs reference")
    logger.info(
        "Frangi baseline: Dice %.3f, detection F1 %.3f over %d test case(s). Wrote %s.",
        summary["dice"]["mean"],
        summary["det_f1"]["mean"],
        len(rows),
        ", ".join(str(output / name) for name in RESULT_FILES.values()),
    )
    return summary
