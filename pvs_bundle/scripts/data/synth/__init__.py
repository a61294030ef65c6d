"""Domain-randomised synthetic training data: label maps of anatomy and PVS, rendered into images on the fly."""
