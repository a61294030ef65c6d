"""Training stage: checkpoints and resume, training handlers, experiment tracking."""
