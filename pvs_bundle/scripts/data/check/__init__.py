"""Data check: find every problem of a BIDS PVS dataset, or of a datalist's cases, in one pass before training.

Real datasets are messy: a truncated download, a mask saved as 0/255, a label on another grid, a 4D file where
a 3D one was expected. Without a check these surface hours into training, inside a data-loader worker. Here
each file is read once (header, then voxels: a truncated ``.nii.gz`` often has a readable header), only a few
numbers are kept per file, and every problem is reported with the file, a short code, a sentence and a fix.

- :mod:`~scripts.data.check.report`: the catalogue of problems (code, severity, fix), a finding, the report.
- :mod:`~scripts.data.check.settings`: the one settings object every entry point takes (patch, voxel size, ...).
- :mod:`~scripts.data.check.volumes`: reading one NIfTI file and its per-file and image-mask checks.
- :mod:`~scripts.data.check.layout`: what the dataset's folders hold (BIDS names, misplaced files, duplicates).
- :mod:`~scripts.data.check.run`: the checks of a dataset and of a workflow's cases, for configs and the
  command line (``python -m scripts.data.check --dataset_dir D``; :func:`scripts.data.check.run.main`).
"""

from types import ModuleType

from scripts import child_module


def __getattr__(name: str) -> ModuleType:
    """A module of this package, imported on first access (``$@scripts.data.check.<module>.<name>`` in a config)."""
    return child_module(__name__, name)
