"""Model stage: the UNet++ factory and its exported (ONNX) form."""

from types import ModuleType

from scripts import child_module


def __getattr__(name: str) -> ModuleType:
    """A module of this package, imported on first access (``$@scripts.model.<module>.<name>`` in a config)."""
    return child_module(__name__, name)
