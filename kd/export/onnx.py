"""JAX -> ONNX through jax2onnx, and running the result with onnxruntime.

Float32 only: weights, activations, inputs and outputs (quantized files:
`kd.export.tflite`). The graphs use the default ONNX domain only, at
`OPSET`, so any ONNX runtime of that opset runs them.

A language model is three graphs (batch 1; T = context length, P =
prompt_len, caches as in `kd.export.lm`):

  logits(tokens [1, T] int32) -> logits [1, T, V]
  prefill(tokens [1, P] int32) -> logits [1, P, V], k_cache, v_cache
  decode(token [1, 1], pos [1], k_cache, v_cache) -> logits [1, V],
      k_cache_out, v_cache_out
"""
import contextlib
import logging
import os
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen import pooling
from jax import lax

from kd import files
from kd.export import artifact, lm

QUANTIZATIONS = ('none',)
OPSET = 18


def _max_pool(x, window_shape, strides=None, padding='VALID'):
  """flax.linen.max_pool as one lax.reduce_window; explicit (low, high)
  padding as -inf padding first, since jax2onnx lowers 'SAME' and 'VALID'
  windows only."""
  strides = strides or (1,) * len(window_shape)
  if not isinstance(padding, str):
    batch = ((0, 0),) * (x.ndim - len(window_shape) - 1)
    x = jnp.pad(x, (*batch, *map(tuple, padding), (0, 0)),
                constant_values=-jnp.inf)
    padding = 'VALID'
  return pooling.pool(x, -jnp.inf, lax.max, tuple(window_shape),
                      tuple(strides), padding)


@contextlib.contextmanager
def _plain_max_pool():
  """While jax2onnx traces, flax.linen.max_pool is its shim, which takes
  window_shape by keyword only and string padding only; model code calls
  it positionally. Inside the traced function `_max_pool` replaces it."""
  saved = nn.max_pool, pooling.max_pool
  nn.max_pool = pooling.max_pool = _max_pool
  try:
    yield
  finally:
    nn.max_pool, pooling.max_pool = saved


def _failure(e: Exception) -> str:
  """The first line of a conversion error and the model code it names."""
  text = str(e)
  where = re.findall(r'from line (\S+) \(([\w.]+)\)', text)
  first = (text.strip().splitlines() or [type(e).__name__])[0][:300]
  at = f' (at {where[-1][1]}, {where[-1][0]})' if where else ''
  return f'{type(e).__name__}: {first}{at}'


def convert_function(fn, inputs: dict, output_names: list[str]) -> bytes:
  """The ONNX model of `fn(*inputs.values())`, which returns a tuple in
  `output_names` order. inputs: {name: jax.ShapeDtypeStruct}, a dim given
  as a string ('B') is symbolic."""
  from jax2onnx import to_onnx  # pylint: disable=import-outside-toplevel

  def traced(*args):
    with _plain_max_pool():
      return fn(*args)

  onnx_ir_log = logging.getLogger('onnx_ir')
  level = onnx_ir_log.level
  onnx_ir_log.setLevel(logging.ERROR)  # One line per untyped shape constant.
  try:
    proto = to_onnx(traced, list(inputs.values()), opset=OPSET,
                    input_names=list(inputs), output_names=output_names)
  except Exception as e:  # pylint: disable=broad-except
    raise artifact.ExportError(
        f'ONNX conversion (jax2onnx) failed: {_failure(e)}. Export this '
        'model with --format=tflite, or replace that layer.') from e
  finally:
    onnx_ir_log.setLevel(level)
  # Shape hints of intermediate values are optional, and jax2onnx stamps
  # some NCHW values inside its conv/batch-norm layouts with their NHWC
  # shapes, which onnxruntime rejects at a residual Add; it infers them.
  del proto.graph.value_info[:]
  return proto.SerializeToString()


def convert(predict_fn, input_shape, *, quantize: str = 'none',
            batch_size: int | None = 1) -> bytes:
  """`predict_fn(x [batch, *input_shape] float32) -> logits` as an ONNX
  model with input 'x' and output 'logits'. `batch_size=None`: a symbolic
  batch dim 'B'."""
  if quantize not in QUANTIZATIONS:
    raise ValueError(f'ONNX export is float32 only: quantize={quantize!r} is '
                     f'not supported; valid: {QUANTIZATIONS} (quantized '
                     'files: --format=tflite)')
  x = jax.ShapeDtypeStruct((batch_size or 'B', *input_shape), jnp.float32)
  return convert_function(lambda v: (predict_fn(v),), {'x': x}, ['logits'])


def _session(model_content: bytes):
  import onnxruntime as ort  # pylint: disable=import-outside-toplevel
  return ort.InferenceSession(model_content,
                              providers=['CPUExecutionProvider'])


class ONNXModel:
  """An ONNX classifier run by onnxruntime (CPU), float in and float out:
  the interface of `kd.export.tflite.TFLiteModel`."""

  def __init__(self, model_content: bytes):
    self.size_bytes = len(model_content)
    self._session = _session(model_content)
    self.input = self._session.get_inputs()[0]
    batch = self.input.shape[0]
    self._fixed_batch = batch if isinstance(batch, int) else None

  @property
  def quantization(self) -> dict:
    return {'input_dtype': 'float32', 'output_dtype': 'float32'}

  def _run(self, x: np.ndarray) -> np.ndarray:
    return self._session.run(None, {self.input.name: x})[0]

  def predict(self, x: np.ndarray) -> np.ndarray:
    """Float32 logits for a batch of any size."""
    x = np.asarray(x, np.float32)
    n = self._fixed_batch
    if not n:
      return self._run(x)
    # A fixed batch runs in chunks of that size, the last one zero-padded.
    padded = np.concatenate(
        [x, np.zeros((-len(x) % n, *x.shape[1:]), np.float32)])
    return np.concatenate(
        [self._run(padded[i:i + n]) for i in range(0, len(padded), n)]
    )[:len(x)]


def op_types(model_content: bytes) -> list[str]:
  import onnx  # pylint: disable=import-outside-toplevel
  return sorted({n.op_type for n in onnx.load_from_string(
      model_content).graph.node})


def convert_lm(model, variables, *, seq_len: int, prompt_len: int,
               cache_len: int) -> dict[str, bytes]:
  """{'logits', 'prefill', 'decode'}: the three graphs of the module doc."""
  if not 0 < prompt_len <= cache_len <= model.max_len:
    raise ValueError(f'need 0 < prompt_len ({prompt_len}) <= cache_len '
                     f'({cache_len}) <= the model context max_len '
                     f'({model.max_len})')
  prefill, decode = lm.functions(model, variables, cache_len)
  int32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.int32)
  cache = jax.ShapeDtypeStruct(lm.cache_shape(model, cache_len), jnp.float32)
  return {
      'logits': convert_function(
          lambda t: (model.apply(variables, t)[0],),
          {'tokens': int32(1, seq_len)}, ['logits']),
      'prefill': convert_function(
          lambda t: tuple(prefill(t).values()),
          {'tokens': int32(1, prompt_len)},
          ['logits', 'k_cache', 'v_cache']),
      # An ONNX graph's input and output names differ.
      'decode': convert_function(
          lambda *a: tuple(decode(*a).values()),
          {'token': int32(1, 1), 'pos': int32(1), 'k_cache': cache,
           'v_cache': cache}, ['logits', 'k_cache_out', 'v_cache_out']),
  }


class ONNXLM:
  """The three graphs of a language model run by onnxruntime: the interface
  of `lm.LiteRTLM` (prefill, decode, generate; what `lm.measure` uses) plus
  `logits`."""

  def __init__(self, graphs: dict[str, bytes]):
    self.size_bytes = sum(map(len, graphs.values()))
    self._sessions = {k: _session(v) for k, v in graphs.items()}
    self.seq_len = self._sessions['logits'].get_inputs()[0].shape[1]
    self.prompt_len = self._sessions['prefill'].get_inputs()[0].shape[1]
    self.cache_len = self._sessions['decode'].get_inputs()[2].shape[2]

  def logits(self, tokens: np.ndarray) -> np.ndarray:
    """Logits [T, V] of `tokens` [T] (T = the exported length)."""
    (out,) = self._sessions['logits'].run(
        None, {'tokens': np.asarray(tokens, np.int32)[None]})
    return out[0]

  def prefill(self, tokens: np.ndarray):
    """Logits [P, V] of right-padded `tokens` [P] and the cache."""
    logits, k, v = self._sessions['prefill'].run(
        None, {'tokens': np.asarray(tokens, np.int32)[None]})
    return logits[0], (k, v)

  def decode(self, token: int, pos: int, cache):
    logits, k, v = self._sessions['decode'].run(None, {
        'token': np.array([[token]], np.int32),
        'pos': np.array([pos], np.int32),
        'k_cache': cache[0], 'v_cache': cache[1]})
    return logits[0], (k, v)

  # The same loop as LiteRT's: prefill, then one decode per new token.
  generate = lm.LiteRTLM.generate


def lm_paths(out_path: str) -> dict[str, str]:
  """The three files of `export_lm`: OUT (logits), OUT's stem + .prefill.onnx
  and + .decode.onnx."""
  stem = out_path[:-len('.onnx')] if out_path.endswith('.onnx') else out_path
  return {'logits': out_path, 'prefill': stem + '.prefill.onnx',
          'decode': stem + '.decode.onnx'}


def export_lm(run: lm.LMRun, out_path: str, *, quantize: str = 'none',
              prompt_len: int | None = None, cache_len: int | None = None,
              prompts: int = 20, new_tokens: int = 64, bpb_rows: int = 8,
              parity_rows: int = 4, speed: bool = True) -> dict:
  """Writes the three graphs (`lm_paths`), `out_path + '.json'` and, for
  BPE, the tokenizer; returns the sidecar: max |logits - JAX's| of the
  logits graph on `parity_rows` held-out rows of T tokens, and
  `lm.measure`'s greedy parity, bits per byte and speed of prefill/decode.
  Defaults as `lm.export`'s."""
  if quantize not in QUANTIZATIONS:
    raise ValueError(f'ONNX export is float32 only: quantize={quantize!r} is '
                     f'not supported; valid: {QUANTIZATIONS} (quantized '
                     'files: --format=tflite)')
  seq_len = lm.context_len(run)
  cache_len = cache_len or seq_len
  prompt_len = prompt_len or cache_len // 2
  graphs = convert_lm(run.model, run.variables, seq_len=seq_len,
                      prompt_len=prompt_len, cache_len=cache_len)
  runner = ONNXLM(graphs)
  paths = lm_paths(out_path)
  apply = jax.jit(lambda x: run.model.apply(run.variables, x[None])[0][0])
  rows = [r['tokens'][0, :-1]
          for r in lm.heldout_rows(run, seq_len, parity_rows)]
  diff = max(float(np.max(np.abs(runner.logits(x) - np.asarray(apply(x)))))
             for x in rows)
  cache = list(lm.cache_shape(run.model, cache_len))
  vocab = run.tokenizer.vocab_size
  tokenizer = lm.tokenizer_info(run, out_path)
  sidecar = {
      'file': os.path.basename(out_path), 'format': 'onnx',
      'bytes': runner.size_bytes, 'quantize': quantize,
      'quantization': 'float32', 'kind': 'transformer_lm',
      'checkpoint_step': run.step, 'vocab_size': vocab,
      'context_len': seq_len, 'prompt_len': prompt_len,
      'cache_len': cache_len, 'tokenizer': tokenizer, 'opset': OPSET,
      'input': lm.input_section(run, prompt_len, cache_len),
      'graphs': {
          'logits': {'file': os.path.basename(paths['logits']),
                     'inputs': {'tokens': [[1, seq_len], 'int32']},
                     'outputs': {'logits': [[1, seq_len, vocab],
                                            'float32']}},
          'prefill': {'file': os.path.basename(paths['prefill']),
                      'inputs': {'tokens': [[1, prompt_len], 'int32',
                                            'prompt, right-padded']},
                      'outputs': {'logits': [[1, prompt_len, vocab],
                                             'float32'],
                                  'k_cache': [cache, 'float32'],
                                  'v_cache': [cache, 'float32']}},
          'decode': {'file': os.path.basename(paths['decode']),
                     'inputs': {'token': [[1, 1], 'int32'],
                                'pos': [[1], 'int32'],
                                'k_cache': [cache, 'float32'],
                                'v_cache': [cache, 'float32']},
                     'outputs': {'logits': [[1, vocab], 'float32'],
                                 'k_cache_out': [cache, 'float32'],
                                 'v_cache_out': [cache, 'float32']}}},
      'cache_layout': 'as kd.export.lm\'s: [layers, batch 1, slot (= '
                      'position), kv_heads, head_dim]',
      'ops': sorted(set().union(*map(op_types, graphs.values()))),
      'logits_parity': {'rows': parity_rows, 'row_tokens': seq_len,
                        'split': 'test', 'max_abs_diff_vs_jax': diff},
  }
  if prompts:
    sidecar.update(lm.measure(run, runner, prompts=prompts,
                              new_tokens=new_tokens, bpb_rows=bpb_rows,
                              speed=speed, runtime='onnxruntime'))
  for name in ('prefill', 'decode'):
    files.write_bytes(paths[name], graphs[name])
  artifact.write(out_path, graphs['logits'], sidecar)
  lm.copy_tokenizer(run, out_path, tokenizer)
  return sidecar

