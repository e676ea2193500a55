"""JAX -> TFLite (LiteRT) through jax2tf, and running the result.

Only builtin TFLite ops are allowed (no Flex / select-TF ops), so every file
runs on the plain LiteRT runtime of a phone or microcontroller host.
"""
import contextlib
import os
import re
import tempfile

import jax
import numpy as np
import tensorflow as tf
from jax.experimental import jax2tf
from jax.extend import core as jax_core

from kd import metrics
# One timer for both runtimes, so LiteRT and jitted JAX are measured alike.
from kd.latency import latency_ms  # pylint: disable=unused-import
from kd.export.artifact import ExportError

QUANTIZATIONS = ('none', 'fp16', 'dynamic', 'int8')


def _unsupported_ops(fn, examples) -> list[str]:
  """Custom calls in the lowered program (ops with no TFLite kernel), each
  with the name stack (module path) it came from."""
  text = jax.jit(fn).lower(*examples).as_text(debug_info=True)
  locs = dict(re.findall(r'^#(loc\d+) = loc\((.*)\)$', text, re.M))
  found = []
  for target, loc in re.findall(
      r'custom_call @([\w.]+)\(.*?loc\(#?(loc\d+|"[^"]*")\)', text):
    where = locs.get(loc, loc)
    names = re.findall(r'"([^"]+)"', where)
    found.append(f'{target} (at {names[0] if names else where})')
  return sorted(set(found))


@contextlib.contextmanager
def _captured_stderr(lines: list[str]):
  """Collects what C++ code (the MLIR converter) writes to file descriptor 2,
  where it reports which op failed, and passes it on afterwards."""
  with tempfile.TemporaryFile(mode='w+b') as tmp:
    saved = os.dup(2)
    os.dup2(tmp.fileno(), 2)
    try:
      yield
    finally:
      os.dup2(saved, 2)
      os.close(saved)
      tmp.seek(0)
      text = tmp.read().decode(errors='replace')
      lines.extend(text.splitlines())
      os.write(2, text[-4000:].encode())


def _primitive_paths(fn, examples, op: str) -> list[str]:
  """Module paths (flax name stacks) of the JAX primitives lowered to `op`."""
  # 'stablehlo.reduce_window' or versioned 'vhlo.sort_v1' -> the primitive's
  # name ('reduce_window_max', 'sort') contains the bare op name.
  base = re.sub(r'_v\d+$', '', op.split('.')[-1])
  paths = []

  def visit(jaxpr):
    for eqn in jaxpr.eqns:
      if base in eqn.primitive.name:
        paths.append(f'{eqn.source_info.name_stack}/{eqn.primitive.name}'
                     .lstrip('/'))
      for sub in jax_core.jaxprs_in_params(eqn.params):
        visit(sub)

  visit(jax.make_jaxpr(fn)(*examples).jaxpr)
  return paths


def _failed_ops(log: list[str], fn, examples) -> list[str]:
  """'op (at module/path)' for each op the converter could not express."""
  found = []
  for line in log:
    m = re.search(r"error: '([\w.]+)' op is not", line)
    if m:
      where = _primitive_paths(fn, examples, m.group(1))
      found.append(f'{m.group(1)} (at {", ".join(where) or "?"})')
  return sorted(set(found))


def _tf_function(fn, specs, polymorphic=None, name: str | None = None):
  converted = jax2tf.convert(fn, with_gradient=False,
                             polymorphic_shapes=polymorphic)
  if name:  # The TFLite signature key.
    converted.__name__ = name
  return tf.function(converted, autograph=False, input_signature=specs)


def _set_weight_quantization(converter, quantize: str):
  """Builtin ops only; 'fp16' stores float16 weights, 'dynamic' int8 weights
  (activations stay float: the dynamic-range recipe)."""
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
  if quantize != 'none':
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  if quantize == 'fp16':
    converter.target_spec.supported_types = [tf.float16]


def _run_converter(converter, signatures) -> bytes:
  """converter.convert(), or an ExportError naming the ops (and the modules
  they come from) that have no builtin kernel. `signatures`: [(jax fn,
  example inputs)] that were converted."""
  log = []
  try:
    with _captured_stderr(log):
      return converter.convert()
  except Exception as e:  # pylint: disable=broad-except
    ops = set()
    for fn, examples in signatures:
      ops.update(_failed_ops(log, fn, examples) +
                 _unsupported_ops(fn, examples))
    if not ops:
      errors = [line.split('error: ', 1)[1].strip()
                for line in str(e).splitlines() + log if 'error: ' in line]
      detail = errors[0] if errors else str(e).strip() or type(e).__name__
      raise ExportError(f'TFLite conversion failed: {detail[:500]}') from e
    raise ExportError(
        'TFLite conversion failed; ops without a builtin TFLite kernel: '
        f'{", ".join(sorted(ops))}. Only builtin TFLite ops are allowed (no '
        'Flex/select-TF ops): replace that layer with builtin ops.') from e


def convert(predict_fn, input_shape, *, quantize: str = 'none',
            representative_data: np.ndarray | None = None,
            batch_size: int | None = 1, max_representative: int = 500) -> bytes:
  """Converts `predict_fn(x) -> logits` to a TFLite flatbuffer.

  quantize: 'none' (float32), 'fp16' (float16 weights), 'dynamic' (int8
  weights, float activations) or 'int8' (full integer, int8 input and output,
  calibrated on `representative_data`). `batch_size=None`: dynamic batch.
  """
  if quantize not in QUANTIZATIONS:
    raise ValueError(f'unknown quantize {quantize!r}; valid: {QUANTIZATIONS}')
  if quantize == 'int8' and representative_data is None:
    raise ValueError('quantize="int8" needs representative_data (example '
                     'inputs from the training split) to calibrate ranges')
  shape = (batch_size, *input_shape)
  polymorphic = None if batch_size else ['(b, ' + ', '.join(
      str(d) for d in input_shape) + ')']
  tf_fn = _tf_function(predict_fn, [tf.TensorSpec(shape, tf.float32)],
                       polymorphic)
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [tf_fn.get_concrete_function()], tf_fn)
  _set_weight_quantization(converter, 'none' if quantize == 'int8'
                           else quantize)
  if quantize == 'int8':
    data = np.asarray(representative_data, np.float32)[:max_representative]
    n = batch_size or 1

    def representative():
      for i in range(0, len(data) - n + 1, n):
        yield [data[i:i + n]]

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
  example = np.zeros((1, *input_shape), np.float32)
  return without_tensor_names(
      _run_converter(converter, [(predict_fn, (example,))]))


def without_tensor_names(blob: bytes) -> bytes:
  """The flatbuffer without its tensor, subgraph and model name strings
  (jax2tf's long op paths: 30 KB of a 0.1M-parameter model); signatures keep
  their input and output names, and the interpreter runs it unchanged."""
  from tensorflow.lite.tools import flatbuffer_utils  # pylint: disable=g-import-not-at-top
  model = flatbuffer_utils.convert_bytearray_to_object(bytearray(blob))
  for buffer in model.buffers:
    if buffer.offset > 1:  # Stored after the flatbuffer (ai-edge-quantizer).
      buffer.data = np.frombuffer(
          blob, np.uint8, buffer.size, buffer.offset).copy()
      buffer.offset = buffer.size = 0
  model.description = None
  for subgraph in model.subgraphs:
    subgraph.name = None
    for tensor in subgraph.tensors:
      tensor.name = None
  return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def convert_signatures(signatures: dict, *, quantize: str = 'none') -> bytes:
  """One flatbuffer with a signature per entry of `signatures`, {name: (fn,
  {input name: example})}: `fn(*inputs)` returns a dict of named outputs, and
  the inputs' shapes and dtypes are fixed at the examples'. quantize: 'none',
  'fp16' or 'dynamic' (weights only; activations stay float)."""
  if quantize not in ('none', 'fp16', 'dynamic'):
    raise ValueError(f'unknown weight quantization {quantize!r}; valid: '
                     'none, fp16, dynamic')
  module = tf.Module()
  functions = []
  for name, (fn, inputs) in signatures.items():
    specs = [tf.TensorSpec(np.shape(x), tf.as_dtype(np.asarray(x).dtype),
                           name=key) for key, x in inputs.items()]
    tf_fn = _tf_function(fn, specs, name=name)
    setattr(module, name, tf_fn)
    functions.append(tf_fn.get_concrete_function())
  converter = tf.lite.TFLiteConverter.from_concrete_functions(functions,
                                                              module)
  _set_weight_quantization(converter, quantize)
  return _run_converter(converter, [(fn, tuple(inputs.values()))
                                    for fn, inputs in signatures.values()])


class TFLiteModel:
  """A TFLite model run by the LiteRT interpreter, float in and float out."""

  def __init__(self, model_content: bytes):
    from ai_edge_litert.interpreter import Interpreter  # pylint: disable=import-outside-toplevel
    self.size_bytes = len(model_content)
    self._interpreter = Interpreter(model_content=model_content)
    self._interpreter.allocate_tensors()
    self.input_details = self._interpreter.get_input_details()[0]
    self.output_details = self._interpreter.get_output_details()[0]
    self._fixed_batch = int(self.input_details['shape_signature'][0]) > 0

  @property
  def quantization(self) -> dict:
    (in_scale, in_zero) = self.input_details['quantization']
    (out_scale, out_zero) = self.output_details['quantization']
    return {'input_scale': float(in_scale), 'input_zero_point': int(in_zero),
            'output_scale': float(out_scale),
            'output_zero_point': int(out_zero),
            'input_dtype': np.dtype(self.input_details['dtype']).name,
            'output_dtype': np.dtype(self.output_details['dtype']).name}

  def _run(self, x: np.ndarray) -> np.ndarray:
    inp, out = self.input_details, self.output_details
    if inp['dtype'] != np.float32 and inp['quantization'][0]:  # Not ids.
      scale, zero = inp['quantization']
      info = np.iinfo(inp['dtype'])
      x = np.clip(np.round(x / scale + zero), info.min, info.max)
    if not self._fixed_batch and tuple(inp['shape']) != x.shape:
      self._interpreter.resize_tensor_input(inp['index'], x.shape)
      self._interpreter.allocate_tensors()
      self.input_details = self._interpreter.get_input_details()[0]
    self._interpreter.set_tensor(inp['index'], x.astype(inp['dtype']))
    self._interpreter.invoke()
    y = self._interpreter.get_tensor(out['index'])
    if out['dtype'] != np.float32 and out['quantization'][0]:
      scale, zero = out['quantization']
      y = (y.astype(np.float32) - zero) * scale
    return y.astype(np.float32)

  def predict(self, x: np.ndarray) -> np.ndarray:
    """Float32 logits for a batch of any size."""
    x = np.asarray(x, np.float32)
    if not self._fixed_batch:
      return self._run(x)
    n = int(self.input_details['shape'][0])
    # A fixed batch runs in chunks of that size, the last one zero-padded.
    padded = np.concatenate(
        [x, np.zeros((-len(x) % n, *x.shape[1:]), np.float32)])
    return np.concatenate(
        [self._run(padded[i:i + n]) for i in range(0, len(padded), n)]
    )[:len(x)]


def test_accuracy(model_content: bytes, images: np.ndarray,
                  labels: np.ndarray) -> dict:
  logits = TFLiteModel(model_content).predict(images)
  return {'accuracy': float(np.mean(metrics.hits(logits, labels))),
          'logits': logits}
