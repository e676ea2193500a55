"""Exporting students for edge devices (see `tflite`; language models with
prefill and decode signatures: `lm`)."""
from kd.export.tflite import (QUANTIZATIONS, ExportError, TFLiteModel,
                              convert, evaluate, latency_ms)
