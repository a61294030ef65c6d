"""Training losses for thin structures: Dice + BCE, plus Skeleton Recall, soft clDice and blob loss as weighted terms.

A PVS is a thin tube, and voxel losses let a prediction break it into pieces at little cost. Three published terms
make the pieces cost, each switched on by its weight in ``loss_weights`` (0: off, the 0.7 loss exactly):

- **Skeleton Recall** (Kirchhoff et al., ECCV 2024): 1 - the share of the label's skeleton, dilated by one voxel
  and cut to the label (a "tubed" skeleton), that the prediction covers (soft, from the probabilities). Cheap:
  train.json computes the skeletons once per case before the preprocessing cache (:func:`skeleton_transforms`),
  crops and moves them with the label and joins them to it (:class:`JoinSkeletond`), not at every step.
- **soft clDice** (Shit et al., CVPR 2021): 1 - the harmonic mean of topology precision (the prediction's soft
  skeleton inside the label) and topology sensitivity (the label's skeleton inside the prediction). The prediction's
  skeleton is the differentiable soft skeleton (iterated min- and max-pooling); the label's is the cached one.
- **blob loss** (Kofler et al., 2023): the Dice loss of each PVS of the label on its own (the prediction with the
  other PVS of the patch masked out), averaged over the PVS of the batch, so a small PVS weighs as much as a large
  one. Components are those VALDO counts (26-connected), found in the patch at each step (a few ms).

The target holds the label in channel 0 and, when the preprocessing added it, the skeleton in channel 1
(:func:`with_skeleton`); a one-channel target (validation) gets its skeleton computed on the spot.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.losses import DiceCELoss
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type, convert_to_numpy
from scipy import ndimage
from skimage.morphology import skeletonize
from torch import nn
from torch.nn import functional

from scripts.masks import CONNECTIVITY
from scripts.settings import as_bool

TERMS: tuple[str, ...] = ("dice", "bce", "skeleton_recall", "cldice", "blob")
SKELETON_TERMS: tuple[str, ...] = ("skeleton_recall", "cldice")
SOFT_SKELETON_ITERATIONS = 3
EPS = 1e-6


def label_skeleton(mask: np.ndarray, tube_voxels: int = 1) -> np.ndarray:
    """The 3D skeleton of a binary mask, dilated by ``tube_voxels`` (26-neighbourhood) and kept inside the mask.

    The tube is cut to the mask as in Kirchhoff et al.'s nnU-Net code (``skel *= seg``): a PVS one or two voxels wide
    is narrower than its dilated skeleton, and a tube reaching outside it would reward predicting background (0.8.0
    to 0.10.0 did not cut it: Skeleton Recall then made the demo recipe's PVS fat, precision 0.47 in issue 23's
    ablation).

    Args:
        mask: a 3D mask (values > 0.5 are foreground).
        tube_voxels: dilation of the skeleton in voxels (Skeleton Recall's tubed skeleton; 0: the bare skeleton).

    Returns:
        A float32 array of 0 and 1, the mask's shape, 0 outside the mask.
    """
    foreground = np.asarray(mask) > 0.5
    if not foreground.any():
        return np.zeros(foreground.shape, dtype=np.float32)
    skeleton = skeletonize(foreground)
    if tube_voxels > 0:
        skeleton = ndimage.binary_dilation(skeleton, CONNECTIVITY, iterations=tube_voxels) & foreground
    return skeleton.astype(np.float32)


class LabelSkeletond(MapTransform):
    """Put the (tubed) skeleton of each label under ``skeleton_key``: a deterministic step, cached with the case.

    Args:
        keys: keys of the ``[1, X, Y, Z]`` labels.
        skeleton_key: where the skeleton goes (one key; with several labels, ``"<key>_<label key>"``).
        tube_voxels: dilation of the skeleton (:func:`label_skeleton`).
        allow_missing_keys: don't raise for a missing key.
    """

    def __init__(
        self,
        keys: KeysCollection,
        skeleton_key: str = "skeleton",
        tube_voxels: int = 1,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.skeleton_key = skeleton_key
        self.tube_voxels = int(tube_voxels)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a copy of ``data`` with the skeleton of every label added."""
        d = dict(data)
        keys = list(self.key_iterator(d))
        for key in keys:
            label = convert_to_numpy(d[key])
            skeleton = np.stack([label_skeleton(channel, self.tube_voxels) for channel in label])
            name = self.skeleton_key if len(keys) == 1 else f"{self.skeleton_key}_{key}"
            d[name] = convert_to_dst_type(skeleton, d[key], dtype=torch.float32)[0]
        return d


def with_skeleton(label: torch.Tensor, skeleton: torch.Tensor) -> torch.Tensor:
    """The training target: the label in channel 0, its skeleton in channel 1."""
    return torch.cat([label, skeleton.to(label.dtype)], dim=0)


class JoinSkeletond(MapTransform):
    """Join the patch's ``skeleton`` to its ``label`` as channel 1 (:func:`with_skeleton`) and drop the key.

    An item without a skeleton passes unchanged (its loss computes the skeleton on the spot).
    """

    def __init__(self, label_key: str = "label", skeleton_key: str = "skeleton") -> None:
        super().__init__([label_key], allow_missing_keys=True)
        self.label_key, self.skeleton_key = label_key, skeleton_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a copy of ``data`` whose label holds its skeleton."""
        d = dict(data)
        if self.skeleton_key in d and self.label_key in d:
            d[self.label_key] = with_skeleton(d[self.label_key], d.pop(self.skeleton_key))
        return d


def skeleton_transforms(enabled: bool | str) -> list[MapTransform]:
    """The deterministic step that adds each label's skeleton before the cache, when a loss term reads it."""
    return [LabelSkeletond("label")] if as_bool(enabled, "skeleton_in_cache") else []


def soft_skeleton(probabilities: torch.Tensor, iterations: int = SOFT_SKELETON_ITERATIONS) -> torch.Tensor:
    """ClDice's differentiable soft skeleton of ``[B, 1, X, Y, Z]`` probabilities (min-pool erosion, max-pool)."""

    def erode(x: torch.Tensor) -> torch.Tensor:
        return torch.minimum(
            torch.minimum(
                -functional.max_pool3d(-x, (3, 1, 1), 1, (1, 0, 0)), -functional.max_pool3d(-x, (1, 3, 1), 1, (0, 1, 0))
            ),
            -functional.max_pool3d(-x, (1, 1, 3), 1, (0, 0, 1)),
        )

    def dilate(x: torch.Tensor) -> torch.Tensor:
        return functional.max_pool3d(x, 3, 1, 1)

    skeleton = functional.relu(probabilities - dilate(erode(probabilities)))
    for _ in range(iterations):
        probabilities = erode(probabilities)
        delta = functional.relu(probabilities - dilate(erode(probabilities)))
        skeleton = skeleton + functional.relu(delta - skeleton * delta)
    return skeleton


def skeleton_recall_loss(probabilities: torch.Tensor, skeleton: torch.Tensor) -> torch.Tensor:
    """1 - the covered share of the label's tubed skeleton, over the batch (0 when no skeleton is in the batch)."""
    total = skeleton.sum()
    if total <= 0:
        return probabilities.sum() * 0.0
    return 1.0 - (probabilities * skeleton).sum() / total


def cldice_loss(probabilities: torch.Tensor, label: torch.Tensor, skeleton: torch.Tensor) -> torch.Tensor:
    """1 - soft clDice: the harmonic mean of topology precision and sensitivity, over the batch."""
    predicted_skeleton = soft_skeleton(probabilities)
    precision = ((predicted_skeleton * label).sum() + EPS) / (predicted_skeleton.sum() + EPS)
    sensitivity = ((skeleton * probabilities).sum() + EPS) / (skeleton.sum() + EPS)
    return 1.0 - 2.0 * precision * sensitivity / (precision + sensitivity)


def blob_loss(probabilities: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """The mean over every PVS of the batch of its own Dice loss, the other PVS of its batch item masked out."""
    losses = []
    components = [ndimage.label(item[0] > 0.5, structure=CONNECTIVITY) for item in label.detach().cpu().numpy()]
    for index, (labelled, count) in enumerate(components):
        if count == 0:
            continue
        labelled = torch.from_numpy(labelled).to(probabilities.device)
        p = probabilities[index, 0]
        for component in range(1, count + 1):
            this = labelled == component
            keep = (labelled == 0) | this  # the other PVS neither reward nor cost
            q = p * keep
            target = this.to(p.dtype)
            losses.append(1.0 - (2.0 * (q * target).sum() + EPS) / (q.sum() + target.sum() + EPS))
    if not losses:
        return probabilities.sum() * 0.0
    return torch.stack(losses).mean()


def check_weights(weights: Mapping[str, Any]) -> dict[str, float]:
    """Return the loss weights as floats, every term of :data:`TERMS` present (missing ones 0 except dice and bce).

    Raises:
        ValueError: for an unknown term or a negative weight.
    """
    unknown = set(weights) - set(TERMS)
    if unknown:
        raise ValueError(f"loss_weights must name terms among {list(TERMS)}, not {sorted(unknown)}.")
    out = {term: float(weights.get(term, 0.0)) for term in TERMS}
    if any(value < 0 for value in out.values()):
        raise ValueError(f"loss_weights must be >= 0, not {dict(weights)}.")
    return out


def needs_skeleton(weights: Mapping[str, Any]) -> bool:
    """True when a term that reads the label's skeleton has a weight above 0."""
    return any(check_weights(weights)[term] > 0 for term in SKELETON_TERMS)


class PVSLoss(nn.Module):
    """Dice + BCE on the logits (MONAI's ``DiceCELoss``, as before), plus the weighted thin-structure terms.

    Args:
        weights: ``{"dice", "bce", "skeleton_recall", "cldice", "blob"}`` weights (missing terms: 0).
        smooth: Dice's smoothing of numerator and denominator.

    Raises:
        ValueError: for an unknown term or a negative weight.
    """

    def __init__(self, weights: Mapping[str, Any], smooth: float = 1e-5) -> None:
        super().__init__()
        self.weights = check_weights(weights)
        self.dice_ce = DiceCELoss(
            sigmoid=True,
            batch=True,
            lambda_dice=self.weights["dice"],
            lambda_ce=self.weights["bce"],
            smooth_nr=smooth,
            smooth_dr=smooth,
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss of ``[B, 1, X, Y, Z]`` logits against a target of 1 (label) or 2 (label, skeleton) channels."""
        label = target[:, :1]
        loss = self.dice_ce(logits, label)
        if not any(self.weights[term] > 0 for term in ("skeleton_recall", "cldice", "blob")):
            return loss
        probabilities = torch.sigmoid(logits.float())
        skeleton = target[:, 1:2] if target.shape[1] > 1 else None
        if skeleton is None and any(self.weights[term] > 0 for term in SKELETON_TERMS):
            skeleton = torch.from_numpy(
                np.stack([[label_skeleton(item[0])] for item in label.detach().cpu().numpy()])
            ).to(probabilities.device)
        label = label.float()
        if self.weights["skeleton_recall"] > 0:
            loss = loss + self.weights["skeleton_recall"] * skeleton_recall_loss(probabilities, skeleton)
        if self.weights["cldice"] > 0:
            loss = loss + self.weights["cldice"] * cldice_loss(probabilities, label, skeleton)
        if self.weights["blob"] > 0:
            loss = loss + self.weights["blob"] * blob_loss(probabilities, label)
        return loss
