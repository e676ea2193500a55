"""A `transformer_encoder` run (kd.models.encoder: BERT, DistilBERT, a
fine-tuned [CLS] classifier) as a `.tflite` or `.onnx` file of one input,

  tokens [1, T] int32 -> logits [1, num_labels] (head='cls')
                         or [1, T, V] (head='mlm'), float32

T = config.data.seq_len (else the model's max_len). A row is the text's
WordPiece ids as kd's classification data builds it (`kd.data.classify.rows`):

  [CLS] + the first T - 2 ids + [SEP], then [PAD] (id pad_id) up to T

and the attention mask is computed inside the model as tokens != pad_id, so
an app passes token ids only. The run's tokenizer.json goes beside the file
(`<file>.tokenizer.json`) and the JSON sidecar names it, the special ids,
the input format, the class names (config.data.class_names, when the run
has them) and the parity with JAX: max |logits - JAX's| and top-1 agreement
on `PARITY_ROWS` seeded padded rows of every length from 3 to T.

Token embeddings are looked up as one_hot(tokens) @ table (exact; TFLite's
EMBEDDING_LOOKUP, see `kd.export.lm`). Quantization: 'none' (float32),
'fp16' (float16 weights) or 'dynamic' (int8 weights, float activations: the
int8 file of an encoder). Full-integer int8 (`--quantize=int8` of image
classifiers) is refused: its calibration aborts TensorFlow 2.21's TFLite
converter on a token-id encoder (the process dies, checked).
"""
import os
import shutil

import flax.linen as nn
import jax
import numpy as np
import tensorflow as tf

from kd import latency as timing
from kd.export import artifact, lm, onnx, tflite

KIND = 'transformer_encoder'
QUANTIZATIONS = ('none', 'fp16', 'dynamic')
WEIGHTS = {'none': 'float32', 'fp16': 'float16 weights, float32 activations',
           'dynamic': 'int8 weights (dynamic range), float32 activations'}
PARITY_ROWS = 8
INT8_REFUSED = ('--quantize=int8 (full-integer) is not available for a '
                'transformer_encoder: its calibration aborts the TFLite '
                'converter on token-id input; --quantize=dynamic writes int8 '
                'weights with float activations')


class Refused(ValueError):
  """An export the command refuses before converting, in one line."""


def seq_len(config, model) -> int:
  """T: the training sequence length, or the model's context."""
  return min(model.max_len, config.data.get('seq_len', 0) or model.max_len)


def tokenizer(workdir: str):
  """The run's WordPiece tokenizer (RUN_DIR/tokenizer.json), or Refused."""
  from kd.data import mlm  # pylint: disable=import-outside-toplevel
  path = os.path.join(workdir, 'tokenizer.json')
  if not os.path.isfile(path):
    raise Refused(f'{path} not found: an encoder export ships the run\'s '
                  'WordPiece tokenizer; copy the tokenizer.json the run was '
                  'trained with into the run directory')
  try:
    return mlm.WordPieceTokenizer.load(path)
  except ValueError as e:
    raise Refused(str(e)) from None


def padded_rows(tok, vocab_size: int, t: int, n: int = PARITY_ROWS,
                seed: int = 0) -> np.ndarray:
  """n rows [CLS] ids [SEP] [PAD].. of lengths spread over 3..t (the
  shortest and longest included), ids drawn from the non-special tokens."""
  rng = np.random.default_rng(seed)
  words = np.setdiff1d(np.arange(vocab_size), tok.special_ids)
  rows = np.full((n, t), tok.pad_id, np.int32)
  for i, length in enumerate(np.linspace(3, t, n).round().astype(int)):
    rows[i, 0], rows[i, length - 1] = tok.cls_id, tok.sep_id
    rows[i, 1:length - 1] = rng.choice(words, length - 2)
  return rows


def predict_fn(model, variables):
  """tokens -> logits, with the one-hot token embedding lookup."""
  def predict(tokens):
    with nn.intercept_methods(lm._one_hot_lookup):  # pylint: disable=protected-access
      return model.apply(variables, tokens, train=False)[0]
  return predict


def convert(predict, t: int, *, format: str = 'tflite',  # pylint: disable=redefined-builtin
            quantize: str = 'none') -> bytes:
  """The flatbuffer (or ONNX model) of `predict(tokens [1, t] int32)`."""
  if quantize not in (QUANTIZATIONS if format == 'tflite'
                      else onnx.QUANTIZATIONS):
    raise Refused(INT8_REFUSED if quantize == 'int8' else
                  f'--quantize={quantize} is not available for a '
                  f'transformer_encoder {format} file; valid: '
                  f'{", ".join(QUANTIZATIONS)} (tflite), none (onnx)')
  tokens = np.zeros((1, t), np.int32)
  if format == 'onnx':
    return onnx.convert_function(
        lambda x: (predict(x),),
        {'tokens': jax.ShapeDtypeStruct((1, t), np.int32)}, ['logits'])
  tf_fn = tflite._tf_function(predict, [tf.TensorSpec((1, t), tf.int32,  # pylint: disable=protected-access
                                                      name='tokens')])
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [tf_fn.get_concrete_function()], tf_fn)
  tflite._set_weight_quantization(converter, quantize)  # pylint: disable=protected-access
  return tflite.without_tensor_names(tflite._run_converter(  # pylint: disable=protected-access
      converter, [(predict, (tokens,))]))


class Runner:
  """An exported encoder file run by LiteRT or onnxruntime: logits of a
  batch of token rows, one row at a time (the file's batch is 1)."""

  def __init__(self, blob: bytes, format: str):  # pylint: disable=redefined-builtin
    self.model = (tflite.TFLiteModel(blob) if format == 'tflite'
                  else onnx.ONNXModel(blob))

  def predict(self, tokens: np.ndarray) -> np.ndarray:
    if isinstance(self.model, onnx.ONNXModel):
      run = lambda row: self.model._session.run(  # pylint: disable=protected-access
          None, {self.model.input.name: row})[0]
    else:
      run = self.model._run  # pylint: disable=protected-access
    return np.concatenate([run(np.asarray(r, np.int32)[None])
                           for r in tokens])


def _names(tok) -> dict:
  return {role: tok._tok.id_to_token(getattr(tok, f'{role}_id'))  # pylint: disable=protected-access
          for role in ('pad', 'unk', 'cls', 'sep', 'mask')}


def input_section(tok, t: int) -> dict:
  n = _names(tok)
  return {
      'name': 'tokens', 'shape': [1, t], 'dtype': 'int32',
      'kind': 'token ids',
      'format': (f'{n["cls"]} (id {tok.cls_id}), the text\'s first {t - 2} '
                 f'WordPiece ids, {n["sep"]} (id {tok.sep_id}), then '
                 f'{n["pad"]} (id {tok.pad_id}) up to {t} ids'),
      'attention_mask': (f'computed inside the model as tokens != '
                         f'{tok.pad_id}: pass the token ids only'),
      'token_types': 'none (all 0: one segment)'}


def output_section(model, t: int) -> dict:
  if model.head == 'cls':
    return {'name': 'logits', 'shape': [1, model.num_labels],
            'dtype': 'float32', 'kind': 'class logits',
            'formula': 'class = argmax(logits[0])'}
  return {'name': 'logits', 'shape': [1, t, model.vocab_size],
          'dtype': 'float32', 'kind': 'masked-LM logits',
          'formula': 'token at position i = argmax(logits[0, i])'}


def export(config, model, variables, workdir: str, out_path: str, *,
           quantize: str = 'none', format: str = 'tflite',  # pylint: disable=redefined-builtin
           step: int | None = None, latency: bool = True) -> dict:
  """Writes `out_path`, its sidecar `out_path + '.json'` and the tokenizer
  `out_path + '.tokenizer.json'`; returns the sidecar (see the module doc)."""
  tok = tokenizer(workdir)
  if model.pad_id != tok.pad_id:
    raise Refused(f'{workdir}: the model\'s pad_id={model.pad_id} is not the '
                  f'tokenizer\'s [PAD] id {tok.pad_id}; padded input would '
                  'be attended to: set model.kwargs.pad_id to '
                  f'{tok.pad_id} (the mask needs no new weights)')
  t = seq_len(config, model)
  predict = predict_fn(model, variables)
  blob = convert(predict, t, format=format, quantize=quantize)
  runner = Runner(blob, format)
  rows = padded_rows(tok, model.vocab_size, t)
  got = runner.predict(rows)
  ref = np.asarray(jax.jit(predict)(rows))
  real = (rows != tok.pad_id) if model.head == 'mlm' else np.ones(len(rows),
                                                                  bool)
  top1 = np.argmax(got, -1) == np.argmax(ref, -1)
  tokenizer_file = os.path.basename(out_path) + '.tokenizer.json'
  sidecar = {
      'file': os.path.basename(out_path), 'bytes': len(blob),
      'format': format, 'quantize': quantize,
      'quantization': WEIGHTS[quantize], 'kind': KIND, 'head': model.head,
      'checkpoint_step': step, 'seq_len': t, 'vocab_size': model.vocab_size,
      'tokenizer': {'file': tokenizer_file, 'kind': 'wordpiece',
                    'vocab_size': tok.vocab_size,
                    **{f'{r}_id': getattr(tok, f'{r}_id')
                       for r in ('pad', 'unk', 'cls', 'sep', 'mask')},
                    'tokens': _names(tok)},
      'input': input_section(tok, t),
      'output': output_section(model, t),
      'parity': {'rows': len(rows), 'lengths': '3 to T, padded',
                 'max_abs_diff_vs_jax': float(np.max(np.abs(got - ref))),
                 'top1_agreement_with_jax': float(np.mean(top1[real]))},
  }
  if model.head == 'cls':
    sidecar['num_labels'] = model.num_labels
    names = config.data.get('class_names')
    sidecar['class_names'] = list(names) if names else None
  if format == 'onnx':
    sidecar.update(opset=onnx.OPSET, ops=onnx.op_types(blob))
  if latency:
    sidecar['latency_ms'] = {
        f'{format}_batch1': timing.latency_ms(runner.predict, rows[:1]),
        'jax_batch1': timing.latency_ms(jax.jit(predict), rows[:1])}
  artifact.write(out_path, blob, sidecar)
  shutil.copyfile(os.path.join(workdir, 'tokenizer.json'),
                  os.path.join(os.path.dirname(os.path.abspath(out_path)),
                               tokenizer_file))
  return sidecar
