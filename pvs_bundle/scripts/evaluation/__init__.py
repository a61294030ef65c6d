"""Evaluation stage: voxel and PVS-level metrics in the native grid, the evaluation workflow, the Frangi baseline."""

from types import ModuleType

from scripts import child_module


def __getattr__(name: str) -> ModuleType:
    """A module of this package, imported on first access (``$@scripts.evaluation.<module>.<name>`` in a config)."""
    return child_module(__name__, name)
