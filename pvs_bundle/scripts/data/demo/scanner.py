"""The demo's scanner: what acquisition adds to the anatomy and its PVS, drawn per subject.

In this order: PVS mixed toward the contrast's CSF intensity by their partial volume, a contrast jitter (a power
law of +-10 % that keeps the brightest tissue), a smooth bias field (about +-15 %), a global scaling (0.85 to 1.25)
and Rician noise with the contrast's sigma range (:class:`~scripts.data.demo.contrasts.Contrast`); int16 output.
"""

from __future__ import annotations

import numpy as np

from scripts.data.demo.contrasts import Contrast
from scripts.data.demo.grid import FOV_CENTRE_MM


def acquire(
    rng: np.random.Generator, base: np.ndarray, pv: np.ndarray, affine: np.ndarray, contrast: Contrast
) -> np.ndarray:
    """Scan a subject: PVS partial volume (toward CSF), contrast jitter, bias field, global scale and Rician noise.

    Args:
        rng: the subject's scanner generator.
        base: the anatomy in the contrast, float32 on the subject's grid.
        pv: the PVS partial volume on that grid (:func:`~scripts.data.demo.pvs.partial_volume`).
        affine: the grid's axis-aligned RAS affine.
        contrast: the intensity table.

    Returns:
        The int16 image.
    """
    signal = base + pv * (contrast.csf - base)
    reference = contrast.reference
    signal = reference * (np.maximum(signal, 0.0) / reference) ** np.float32(rng.uniform(0.9, 1.1))
    signal *= bias_field(rng, affine, base.shape) * np.float32(rng.uniform(0.85, 1.25))
    sigma = np.float32(rng.uniform(*contrast.noise_sigma))
    real = signal + sigma * rng.standard_normal(base.shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(base.shape, dtype=np.float32)
    return np.clip(np.rint(np.hypot(real, imaginary)), 0, np.iinfo(np.int16).max).astype(np.int16)


def bias_field(rng: np.random.Generator, affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A smooth multiplicative field: exp of a random quadratic polynomial of position (about +-15 %).

    Args:
        rng: the subject's scanner generator.
        affine: the grid's axis-aligned RAS affine.
        shape: the grid's shape.

    Returns:
        A float32 field of ``shape``.
    """
    u = [
        ((affine[a, a] * np.arange(shape[a]) + affine[a, 3] - FOV_CENTRE_MM[a]) / 100.0).astype(np.float32)
        for a in range(3)
    ]
    linear, square, cross = (rng.normal(0.0, s, size=3).astype(np.float32) for s in (0.12, 0.08, 0.08))
    x, y, z = u[0][:, None, None], u[1][None, :, None], u[2][None, None, :]
    log_field = (
        (linear[0] * x + square[0] * x**2 + cross[0] * x * y + cross[1] * x * z)
        + (linear[1] * y + square[1] * y**2 + cross[2] * y * z)
        + (linear[2] * z + square[2] * z**2)
    )
    return np.exp(log_field)
