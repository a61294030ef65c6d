"""From the network's logits to the PVS mask on the input's own grid: the postprocessing of inference and evaluation.

One chain, built by :func:`mask_transforms` for ``configs/inference.json`` (``postprocessing``) and
``configs/evaluate.json`` (``validate#mask_transforms``), so that the two binarise a prediction the same way:

1. sigmoid: probabilities;
2. ``Invertd``: back through the preprocessing (spacing, orientation) to the input's grid, by linear interpolation;
3. the threshold (:class:`scripts.inference.hysteresis.HysteresisThresholdd`: the stored threshold, or hysteresis
   down to ``grow_threshold``);
4. the small-component removal (:class:`scripts.inference.small_components.RemoveSmallComponentsd`,
   ``min_pvs_voxels``).

With ``threshold_on="model"`` steps 2 and 3 swap: the probabilities are thresholded on the model's grid (``pixdim``)
and the mask is taken back to the input's grid by linear interpolation and binarised at one half, which keeps the
input's voxels whose centre lies inside the mask (the rule a reference drawn on that grid follows: a voxel is PVS
when its centre is). On an input already on the model's grid the two orders agree; on another grid, interpolating
probabilities first lowers a thin PVS's peak below a high threshold, and its mask comes out thinner than on the
model's grid (measured: docs/performance.md, "Thresholding on the model's grid").

Inference also takes the head mask back to the input's grid (``head``, the preprocessed image above
``head_threshold``) and keeps the probabilities before the threshold (``prob``) for its outputs.
"""

from __future__ import annotations

from monai.transforms import Activationsd, AsDiscreted, Invertd, Transform

from scripts.data.transforms import Aliasd
from scripts.inference.hysteresis import HysteresisThresholdd
from scripts.inference.small_components import RemoveSmallComponentsd

THRESHOLD_ON: tuple[str, ...] = ("input", "model")
"""Where the threshold is applied: on the input's grid (after ``Invertd``) or on the model's (before it)."""


def mask_transforms(
    preprocessing: Transform,
    threshold: float,
    grow_threshold: float | str | None = None,
    min_pvs_voxels: int = 0,
    head_threshold: float | None = None,
    keep_probabilities: bool = False,
    min_pvs_mm3: float = 0.0,
    threshold_on: str = "input",
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
        threshold_on: ``"input"`` (threshold the probabilities on the input's grid) or ``"model"`` (threshold on
            the model's grid, then keep the input's voxels whose centre lies inside the mask); module docstring.

    Returns:
        The transforms, in order; with neither option: sigmoid, invert, threshold, small-component removal.

    Raises:
        ValueError: if ``threshold_on`` is not one of :data:`THRESHOLD_ON`; if ``grow_threshold``,
            ``min_pvs_voxels`` or ``min_pvs_mm3`` is invalid (by their transforms).
    """
    if threshold_on not in THRESHOLD_ON:
        raise ValueError(f"threshold_on must be one of {THRESHOLD_ON}, not {threshold_on!r}.")
    head = head_threshold is not None
    on_model_grid = threshold_on == "model"
    threshold_step = HysteresisThresholdd(keys="pred", threshold=threshold, grow_threshold=grow_threshold)
    transforms: list[Transform] = [Activationsd(keys="pred", sigmoid=True)]
    if head:
        transforms.append(Aliasd(keys="image", names="head"))
    keep_before = keep_probabilities and on_model_grid  # the model-grid probabilities go back with the mask
    if keep_before:
        transforms.append(Aliasd(keys="pred", names="prob"))  # the threshold step writes a new tensor
    if on_model_grid:
        transforms.append(threshold_step)
    inverted = ["pred", *(["prob"] if keep_before else []), *(["head"] if head else [])]
    transforms.append(
        Invertd(
            keys=inverted,
            transform=preprocessing,
            orig_keys="image",
            nearest_interp=False,
            to_tensor=True,
            device="cpu",
        )
    )
    if keep_probabilities and not on_model_grid:
        transforms.append(Aliasd(keys="pred", names="prob"))
    if head:
        transforms.append(AsDiscreted(keys="head", threshold=head_threshold))
    transforms.append(AsDiscreted(keys="pred", threshold=0.5) if on_model_grid else threshold_step)
    return [
        *transforms,
        RemoveSmallComponentsd(keys="pred", min_pvs_voxels=min_pvs_voxels, min_pvs_mm3=min_pvs_mm3),
    ]
