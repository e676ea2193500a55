"""A fine-tuned encoder classifier (`transformer_encoder`, `head='cls'`,
data.task='classify') as a `.tflite` or `.onnx` file with its JSON sidecar
and the run's tokenizer beside it.

The file has one input and one output:

  input_ids [1, T] int32   `[CLS]`, the text's first T - 2 WordPiece ids,
                           `[SEP]`, then `[PAD]` (pad_id) up to T, T the
                           run's data.seq_len; the attention mask is
                           computed inside the model as input_ids != pad_id
  logits    [1, C] float32 the [CLS] head's class logits; class = argmax,
                           named by the sidecar's `class_names`

`tokenizer.json` (BERT WordPiece, for the `tokenizers` library; lowercasing
normaliser) is written beside the file; the sidecar's `input` names it, its
special ids and the row format. quantize: 'none' (float32), 'fp16', or
'dynamic' (int8 weights, float activations; token ids cannot be scaled into
int8, so a full-integer file does not apply). ONNX: float32. The sidecar's
figures are the file's, run by LiteRT or onnxruntime on the test split,
beside the JAX model's.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np

from kd import files
from kd import latency as timing
from kd import metrics
from kd.data import classify
from kd.data import mlm
from kd.data import text
from kd.export import artifact, onnx, tflite

QUANTIZATIONS = ('none', 'fp16', 'dynamic')


def check(config, quantize: str, format: str) -> None:  # pylint: disable=redefined-builtin
  """Refuses, before anything is read, what this exporter does not write."""
  head = config.model.kwargs.get('head', 'mlm')
  if head != 'cls':
    raise artifact.ExportError(
        'a masked-LM encoder (head=mlm) exports to a Hugging Face folder '
        '(--format=hf); --format=tflite|onnx exports a fine-tuned classifier '
        "(data.task='classify', model.kwargs.head='cls')")
  if format == 'tflite' and quantize not in QUANTIZATIONS:
    raise artifact.ExportError(
        f'--quantize={quantize}: an encoder takes token ids, which a '
        f'full-integer file cannot scale; valid: {", ".join(QUANTIZATIONS)} '
        "('dynamic': int8 weights)")


class _Runner:
  """The exported file run one row at a time: LiteRT's signature runner or
  an onnxruntime session."""

  def __init__(self, blob: bytes, format: str):  # pylint: disable=redefined-builtin
    if format == 'onnx':
      session = onnx._session(blob)  # pylint: disable=protected-access
      self._run = lambda ids: session.run(None, {'input_ids': ids})[0]
    else:
      from ai_edge_litert.interpreter import Interpreter  # pylint: disable=import-outside-toplevel
      interpreter = Interpreter(model_content=blob)
      # One signature: the converter names it 'serving_default'.
      runner = interpreter.get_signature_runner(
          *interpreter.get_signature_list())
      self._run = lambda ids: runner(input_ids=ids)['logits']

  def predict(self, rows: np.ndarray) -> np.ndarray:
    return np.concatenate([self._run(rows[i:i + 1]) for i in range(len(rows))])


def export(run_dir: str, out_path: str, *, quantize: str = 'none',
           format: str = 'tflite', latency: bool = True) -> dict:  # pylint: disable=redefined-builtin
  """Writes `out_path`, `out_path + '.json'` and tokenizer.json beside
  them; returns the sidecar."""
  from kd import runs  # pylint: disable=import-outside-toplevel
  config, model, variables, step = runs.load_run(run_dir)
  check(config, quantize, format)
  d = config.data
  tok = mlm.WordPieceTokenizer.load(run_dir)
  beside = os.path.join(os.path.dirname(os.path.abspath(out_path)),
                        'tokenizer.json')
  if os.path.exists(beside):
    with open(beside) as f:
      if f.read() != tok.to_str():
        raise artifact.ExportError(
            f'{beside} holds another tokenizer than {run_dir}\'s: export '
            'into another folder (--out)')
  name = text.source(d)
  x_test, y_test = classify.labelled_rows(name, 'test', tok, d.seq_len,
                                          d.data_dir or None)
  def logits(ids):
    return model.apply(variables, ids, train=False)[0]

  if format == 'onnx':
    blob = onnx.convert_function(
        lambda ids: (logits(ids),),
        {'input_ids': jax.ShapeDtypeStruct((1, d.seq_len), jnp.int32)},
        ['logits'])
  else:
    blob = tflite.convert_signatures(
        {'classify': (lambda input_ids: {'logits': logits(input_ids)},
                      {'input_ids': x_test[:1]})}, quantize=quantize)
  runner = _Runner(blob, format)
  lite = runner.predict(x_test)
  ref = np.asarray(jax.jit(logits)(x_test))
  jax_acc = float(np.mean(metrics.hits(ref, y_test)))
  sidecar = {
      'file': os.path.basename(out_path), 'bytes': len(blob),
      'format': format, 'quantize': quantize, 'kind': 'transformer_encoder',
      'head': 'cls', 'checkpoint_step': step,
      'input': {
          'name': 'input_ids', 'shape': [1, d.seq_len], 'dtype': 'int32',
          'tokenizer': 'tokenizer.json',
          'format': (f'[CLS] ({tok.cls_id}), the text\'s first '
                     f'{d.seq_len - 2} WordPiece ids, [SEP] ({tok.sep_id}), '
                     f'then [PAD] ({tok.pad_id}) up to {d.seq_len}'),
          'attention_mask': f'inside the model: input_ids != {tok.pad_id}',
          'special_ids': {'cls': tok.cls_id, 'sep': tok.sep_id,
                          'pad': tok.pad_id, 'unk': tok.unk_id,
                          'mask': tok.mask_id}},
      'output': {'name': 'logits', 'shape': [1, int(ref.shape[-1])],
                 'dtype': 'float32', 'kind': 'logits',
                 'formula': 'class = argmax(logits[0])'},
      'class_names': classify.classes(name, d.data_dir or None),
      'test_examples': int(len(y_test)),
      'jax_accuracy': jax_acc,
      f'{format}_accuracy': float(np.mean(metrics.hits(lite, y_test))),
      'agreement_with_jax': float(np.mean(metrics.agreement(lite, ref))),
      'max_abs_diff_vs_jax': float(np.max(np.abs(lite - ref))),
  }
  if latency:
    sidecar['latency_ms'] = {
        f'{format}_batch1': timing.latency_ms(runner.predict, x_test[:1]),
        'jax_batch1': timing.latency_ms(jax.jit(logits), x_test[:1])}
  artifact.write(out_path, blob, sidecar)
  if not os.path.exists(beside):
    files.write_bytes(beside, tok.to_str())
  return sidecar
