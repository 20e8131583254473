"""Inference: the predictor, full-resolution upsampling, ONNX, output files and the results figure."""
