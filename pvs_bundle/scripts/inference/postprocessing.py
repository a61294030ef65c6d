"""From the network's logits to the PVS mask on the input's own grid: the postprocessing of inference and evaluation.

One chain, built by :func:`mask_transforms` for ``configs/inference.json`` (``postprocessing``) and
``configs/evaluate.json`` (``validate#mask_transforms``), so that the two binarise a prediction the same way:

1. sigmoid: probabilities;
2. ``Invertd``: back through the preprocessing (spacing, orientation) to the input's grid, by linear interpolation;
3. the threshold (:class:`scripts.inference.hysteresis.HysteresisThresholdd`: the stored threshold, or hysteresis
   down to ``grow_threshold``);
4. the small-component removal (:class:`scripts.inference.small_components.RemoveSmallComponentsd`,
   ``min_pvs_voxels``).

Inference also takes the head mask back to the input's grid (``head``, the preprocessed image above
``head_threshold``) and keeps the probabilities before the threshold (``prob``) for its outputs.
"""

from __future__ import annotations

from monai.transforms import Activationsd, AsDiscreted, Invertd, Transform

from scripts.data.transforms import Aliasd
from scripts.inference.hysteresis import HysteresisThresholdd
from scripts.inference.small_components import RemoveSmallComponentsd


def mask_transforms(
    preprocessing: Transform,
    threshold: float,
    grow_threshold: float | str | None = None,
    min_pvs_voxels: int = 0,
    head_threshold: float | None = None,
    keep_probabilities: bool = False,
    min_pvs_mm3: float = 0.0,
) -> list[Transform]:
    """The postprocessing transforms of a batch item ``{"pred": logits, "image": preprocessed image, ...}``.

    Args:
        preprocessing: the (invertible) preprocessing the image went through; ``Invertd`` undoes it.
        threshold: the probability threshold (the model's stored one under ``threshold auto``).
        grow_threshold: hysteresis' growth threshold; None (or ``"null"``) for the plain threshold.
        min_pvs_voxels: predicted components with fewer voxels are removed (0 keeps all).
        head_threshold: when given, the preprocessed image is also inverted as ``head`` and binarised at this
            value (inference's head mask); None: no head mask.
        keep_probabilities: keep the probabilities on the input's grid as ``prob`` (an alias, not a copy).
        min_pvs_mm3: predicted components of smaller volume are removed (the model's stored one under ``auto``).

    Returns:
        The transforms, in order; with neither option: sigmoid, invert, threshold, small-component removal.

    Raises:
        ValueError: if ``grow_threshold``, ``min_pvs_voxels`` or ``min_pvs_mm3`` is invalid (by their transforms).
    """
    head = head_threshold is not None
    transforms: list[Transform] = [Activationsd(keys="pred", sigmoid=True)]
    if head:
        transforms.append(Aliasd(keys="image", names="head"))
    transforms.append(
        Invertd(
            keys=["pred", "head"] if head else "pred",
            transform=preprocessing,
            orig_keys="image",
            nearest_interp=False,
            to_tensor=True,
            device="cpu",
        )
    )
    if keep_probabilities:
        transforms.append(Aliasd(keys="pred", names="prob"))
    if head:
        transforms.append(AsDiscreted(keys="head", threshold=head_threshold))
    return [
        *transforms,
        HysteresisThresholdd(keys="pred", threshold=threshold, grow_threshold=grow_threshold),
        RemoveSmallComponentsd(keys="pred", min_pvs_voxels=min_pvs_voxels, min_pvs_mm3=min_pvs_mm3),
    ]
