"""The synthetic demo dataset (ds005595 layout) the bundle trains and runs on offline: one concept per module.

``grid`` (field of view and voxel size), ``contrasts`` (intensity tables, voxel sizes), ``anatomy`` (the MNI152
template and each subject's warp), ``pvs`` (capsules and their partial volume), ``scanner`` (bias field, scaling,
noise), ``parcellation`` (FreeSurferColorLUT labels), ``subject`` (one subject from a seed), ``bids_files`` (the
files and their layout) and ``dataset`` (the entry points). The command line is :mod:`scripts.data.demo_data`.
"""

from types import ModuleType

from scripts import child_module
from scripts.data.demo.dataset import MARKER_NAME, ensure_demo_dataset, generate_dataset
from scripts.data.demo.grid import DEMO_SHAPE
from scripts.data.demo.pvs import PVSSettings
from scripts.data.demo.subject import SyntheticSubject, empty_subjects, synthesize_subject

__all__ = [
    "DEMO_SHAPE",
    "MARKER_NAME",
    "PVSSettings",
    "SyntheticSubject",
    "empty_subjects",
    "ensure_demo_dataset",
    "generate_dataset",
    "synthesize_subject",
]


def __getattr__(name: str) -> ModuleType:
    """A module of this package, imported on first access (``$@scripts.data.demo.<module>.<name>`` in a config)."""
    return child_module(__name__, name)
