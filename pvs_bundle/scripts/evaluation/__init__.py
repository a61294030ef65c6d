"""Evaluation stage: voxel and PVS-level metrics in the native grid, the evaluation workflow, the Frangi baseline."""
