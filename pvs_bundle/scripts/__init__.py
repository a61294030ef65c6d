"""Python helpers of the pvs_bundle MONAI Bundle: what the JSON configs cannot say.

The configs reach these modules as ``scripts.<module>.<name>`` after ``"$import scripts"``.
"""

from scripts import datalist, handlers, io, metrics, network, plots, transforms

__all__ = ["datalist", "handlers", "io", "metrics", "network", "plots", "transforms"]
