"""Data stage: BIDS datalist, data checks, shared preprocessing, caching and the synthetic demo dataset."""

from types import ModuleType

from scripts import child_module


def __getattr__(name: str) -> ModuleType:
    """A module of this package, imported on first access (``$@scripts.data.<module>.<name>`` in a config)."""
    return child_module(__name__, name)
