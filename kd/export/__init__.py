"""Exporting students for edge devices (see `tflite`; language models with
prefill and decode signatures: `lm`; float32 ONNX through jax2onnx: `onnx`)."""
from kd.export.tflite import (QUANTIZATIONS, ExportError, TFLiteModel,
                              convert, evaluate, latency_ms)
