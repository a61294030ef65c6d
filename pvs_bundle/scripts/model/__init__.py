"""Model stage: the UNet++ factory and its exported (ONNX) form."""
