"""The data check's settings: the one object every check and entry point takes, validated once.

They are the workflow's own: the training patch (``patch_size``) and the voxel size the preprocessing resamples to
(``pixdim``) decide which volumes are too small, ``non_binary`` (the config's ``non_binary_labels``) whether a
mask that is not 0/1 is a warning (training binarises it) or an error, and ``affine_atol`` how far a mask's affine
may differ from its image's. The entry points take them as keyword arguments (a config or the command line names
them one by one) and build one :class:`CheckSettings` of them; the report records them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

NON_BINARY_POLICIES: tuple[str, ...] = ("binarize", "refuse")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


@dataclass(frozen=True)
class CheckSettings:
    """What a data check compares the files with.

    Attributes:
        patch_size: the training patch, in RAS order; volumes smaller after resampling are reported.
        pixdim: the voxel size the preprocessing resamples to, in mm.
        non_binary: ``"binarize"`` (a non-binary mask is a warning: training binarises it at > 0.5) or
            ``"refuse"`` (it is an error).
        affine_atol: the largest absolute difference allowed between entries of an image's and its mask's affine.

    Raises:
        ValueError: when one is malformed.
    """

    patch_size: tuple[int, int, int] = (96, 96, 96)
    pixdim: tuple[float, float, float] = (0.8, 0.8, 0.8)
    non_binary: str = "binarize"
    affine_atol: float = 1e-3

    def __post_init__(self) -> None:
        """Validate the settings and store them as plain tuples and numbers."""
        patch_size, pixdim, affine_atol = self.patch_size, self.pixdim, self.affine_atol
        if not (
            isinstance(patch_size, Sequence | np.ndarray)
            and len(patch_size) == 3
            and all(_is_number(p) and int(p) == p and p > 0 for p in patch_size)
        ):
            raise ValueError(f"patch_size must be three positive ints, not {patch_size!r}.")
        if not (
            isinstance(pixdim, Sequence | np.ndarray)
            and len(pixdim) == 3
            and all(_is_number(p) and math.isfinite(p) and p > 0 for p in pixdim)
        ):
            raise ValueError(f"pixdim must be three positive voxel sizes in mm, not {pixdim!r}.")
        if self.non_binary not in NON_BINARY_POLICIES:
            raise ValueError(f"non_binary must be one of {NON_BINARY_POLICIES}, not {self.non_binary!r}.")
        if not (_is_number(affine_atol) and affine_atol >= 0):
            raise ValueError(f"affine_atol must be a non-negative number, not {affine_atol!r}.")
        object.__setattr__(self, "patch_size", (int(patch_size[0]), int(patch_size[1]), int(patch_size[2])))
        object.__setattr__(self, "pixdim", (float(pixdim[0]), float(pixdim[1]), float(pixdim[2])))
        object.__setattr__(self, "affine_atol", float(affine_atol))

    @classmethod
    def of(cls, **settings: Any) -> CheckSettings:
        """Build the settings from keyword arguments, as the entry points receive them (defaults for the rest).

        Raises:
            ValueError: when a name is not a setting, or a setting is malformed.
        """
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(settings) - set(names))
        if unknown:
            raise ValueError(f"data check settings must be among {names}, not {unknown}.")
        return cls(**settings)
