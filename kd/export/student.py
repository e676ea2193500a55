"""Export a trained student to a `.tflite` or `.onnx` file plus a JSON
sidecar, with its accuracy, parity with JAX, size and batch-1 latency
measured on the way."""
import os

import jax
import numpy as np

from kd import data
from kd import evaluate
from kd import metrics
from kd.export import artifact, onnx, tflite

FORMATS = ('tflite', 'onnx')


def _class_names(config) -> list[str] | None:
  d = config.data
  try:
    b = data.builder(d.name, d.data_dir or None, d.download)
    return list(b.info.features['label'].names)
  except Exception:  # pylint: disable=broad-except
    return None


def export(config, model, variables, out_path: str, *, quantize: str = 'none',
           batch_size: int | None = 1, softmax: bool = False,
           step: int | None = None, latency: bool = True,
           format: str = 'tflite') -> dict:  # pylint: disable=redefined-builtin
  """Writes `out_path` (.tflite or .onnx) and `out_path + '.json'`; returns
  the sidecar, whose `{format}_accuracy` and `latency_ms.{format}_batch1`
  are the exported file's, run by LiteRT or onnxruntime.

  int8 calibrates on `config.export.representative_examples` training
  examples and has int8 input and output tensors. ONNX: float32 only.
  """
  if format not in FORMATS:
    raise ValueError(f'unknown format {format!r}; valid: {FORMATS}')
  d = config.data
  kw = dict(data_dir=d.data_dir or None, image_size=d.image_size or None,
            download=d.download)
  spec = data.spec(d.name, kw['image_size'])
  x_train, _ = data.load_split(d.name, 'train', **kw)
  x_test, y_test = data.load_split(d.name, 'test', **kw)
  rng = np.random.default_rng(config.seed)
  rep = x_train[rng.permutation(len(x_train))[
      :config.export.representative_examples]]

  def predict(x):
    logits = model.apply(variables, x, train=False)[0]
    return jax.nn.softmax(logits) if softmax else logits

  if format == 'onnx':
    blob = onnx.convert(predict, spec.input_shape, quantize=quantize,
                        batch_size=batch_size)
    runner = onnx.ONNXModel(blob)
  else:
    blob = tflite.convert(predict, spec.input_shape, quantize=quantize,
                          representative_data=rep, batch_size=batch_size)
    runner = tflite.TFLiteModel(blob)
  lite = runner.predict(x_test)
  ref = np.asarray(jax.jit(predict)(x_test))
  jax_acc = float(np.mean(metrics.hits(ref, y_test)))
  lite_acc = float(np.mean(metrics.hits(lite, y_test)))
  sidecar = {
      'file': os.path.basename(out_path), 'bytes': len(blob),
      'format': format, 'quantize': quantize,
      'input': {'shape': [batch_size or -1, *spec.input_shape],
                'dtype': runner.quantization['input_dtype'],
                'normalization': {'mean': list(spec.mean),
                                  'std': list(spec.std),
                                  'note': 'x = (pixels / 255 - mean) / std'}},
      'output': {'dtype': runner.quantization['output_dtype'],
                 'kind': 'probabilities' if softmax else 'logits'},
      'quantization': runner.quantization,
      'class_names': _class_names(config),
      'checkpoint_step': step,
      'test_examples': int(len(y_test)),
      'jax_accuracy': jax_acc, f'{format}_accuracy': lite_acc,
      'agreement_with_jax': float(np.mean(metrics.agreement(lite, ref))),
      'max_abs_diff_vs_jax': float(np.max(np.abs(lite - ref))),
  }
  if format == 'onnx':
    sidecar.update(opset=onnx.OPSET, ops=onnx.op_types(blob))
  if quantize == 'int8' and jax_acc - lite_acc > 0.01:
    sidecar['warning'] = (f'int8 loses {100 * (jax_acc - lite_acc):.1f} '
                          'accuracy points (> 1): try quantization-aware '
                          'distillation or more representative examples')
  if latency:
    sidecar['latency_ms'] = {
        f'{format}_batch1': evaluate.latency_ms(runner.predict, x_test[:1]),
        'jax_batch1': evaluate.model_latency_ms(model, variables,
                                                spec.input_shape)}
  artifact.write(out_path, blob, sidecar)
  return sidecar
