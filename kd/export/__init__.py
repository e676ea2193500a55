"""Exporting students for edge devices (see `tflite`)."""
from kd.export.tflite import (QUANTIZATIONS, ExportError, TFLiteModel,
                              convert, evaluate, latency_ms)
