"""Inference canaries: a local ONNX Runtime canary (`kind: onnx`) run in a worker process with
NVML GPU health, and a remote canary over the Open Inference Protocol (`kind: inference`)."""
