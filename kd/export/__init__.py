"""Exporting students for edge devices (see `tflite`; language models with
prefill and decode signatures: `lm`; float32 ONNX through jax2onnx: `onnx`).
Import the submodule you need: `tflite` loads TensorFlow, `onnx` does not."""
