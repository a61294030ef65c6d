"""Measurements of segmented PVS: per-PVS census, regional burden from a parcellation, the QC report."""
