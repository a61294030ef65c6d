"""Native labels: each reference read once, in the grid it was drawn in, binarised by VALDO's reference rule.

Resampling a thin-structure label and back is lossy, so evaluation scores against the label file itself
(:class:`NativeLabeld`, :func:`load_native_label`), never against an inverted copy; :func:`check_same_grid` refuses
a prediction that does not lie on its label's grid.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.utils import ImageMetaKey, convert_to_numpy

from scripts.masks import reference_mask
from scripts.nifti import header_spacing

SPACING_KEY = "spacing_mm"


AFFINE_TOLERANCE_MM = 1e-3


def source_file(data: Any, key: Hashable) -> str:
    """Return the file a loaded image came from, as MONAI's ``LoadImage`` recorded it in its metadata.

    Args:
        data: a MetaTensor produced by ``LoadImaged`` and later transforms.
        key: its key in the data dict, for the error message.

    Returns:
        The file path.

    Raises:
        ValueError: when ``data`` is not a MetaTensor that records its source file.
    """
    filename = data.meta.get(ImageMetaKey.FILENAME_OR_OBJ) if isinstance(data, MetaTensor) else None
    if not isinstance(filename, str) or not filename:
        raise ValueError(
            f"{key!r} must be a MetaTensor loaded from a file (with meta[{ImageMetaKey.FILENAME_OR_OBJ!r}]), "
            f"not {type(data).__name__}."
        )
    return filename


def load_native_label(path: str | os.PathLike[str]) -> MetaTensor:
    """Read a label in its own grid, binarised by the reference rule, channel first, with its affine and spacing.

    Args:
        path: the label NIfTI file.

    Returns:
        A float32 MetaTensor of shape (1, X, Y, Z) in the file's voxel order; ``meta["spacing_mm"]`` holds the
        voxel size from the header and ``meta["filename_or_obj"]`` the path.

    Raises:
        ValueError: if the label is not a 3D volume.
    """
    image = nib.load(str(path))
    if len(image.shape) != 3:
        raise ValueError(f"label {path} must be a 3D volume, not of shape {image.shape}.")
    mask = reference_mask(np.asanyarray(image.dataobj))
    meta = {
        ImageMetaKey.FILENAME_OR_OBJ: str(path),
        SPACING_KEY: header_spacing(image),
    }
    return MetaTensor(torch.from_numpy(mask[None].astype(np.float32)), affine=torch.as_tensor(image.affine), meta=meta)


class NativeLabeld(MapTransform):
    """Put under each key the label read from its original file (see :func:`load_native_label`).

    Resampling a thin-structure label and back is lossy, so the reference for scoring is read from disk, in the
    grid it was drawn in, instead of being inverted.

    Args:
        keys: keys of the labels: MetaTensors that record their source file, or (with ``path_key``) anything.
        path_key: key of the label's file path, when the label itself was not loaded (evaluation loads only the
            image; the engine's output then holds no label).
        allow_missing_keys: do not fail when a key is absent.
    """

    def __init__(self, keys: KeysCollection, path_key: str | None = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.path_key = path_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Swap every label for its native version.

        Raises:
            ValueError: if a label does not record its source file and there is no path under ``path_key``.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            path = d.get(self.path_key) if self.path_key is not None else None
            d[key] = load_native_label(path if isinstance(path, str | os.PathLike) else source_file(d[key], key))
        return d


def check_same_grid(
    pred: np.ndarray, pred_affine: Any, label: np.ndarray, label_affine: np.ndarray, label_file: str
) -> None:
    """Check that a prediction inverted to the native grid lies on its label's grid.

    Args:
        pred: the 3D prediction.
        pred_affine: its affine (None if it carries none: then only the shapes are compared).
        label: the 3D label.
        label_affine: the label's affine.
        label_file: the label's path, for the message.

    Raises:
        ValueError: if the shapes differ or the affines differ by more than 0.001 mm.
    """
    affine = None if pred_affine is None else convert_to_numpy(pred_affine).astype(np.float64)
    if pred.shape != label.shape or (
        affine is not None and not np.allclose(affine, label_affine, atol=AFFINE_TOLERANCE_MM)
    ):
        raise ValueError(
            f"the prediction inverted to the native grid must match the label {label_file} (shape {label.shape}, "
            f"affine {label_affine.tolist()}), not shape {pred.shape}, affine "
            f"{None if affine is None else affine.tolist()}: are the image and its label on the same grid?"
        )
