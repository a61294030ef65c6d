"""Inference stage: input discovery and checks, mask writing, the per-scan PVS burden table."""
