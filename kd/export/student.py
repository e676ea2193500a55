"""Export a trained student to a `.tflite` or `.onnx` file plus a JSON
sidecar, with its accuracy, parity with JAX, size and batch-1 latency
measured on the way."""
import os

import jax
import numpy as np

from kd import data
from kd import latency as timing
from kd import metrics
from kd.export import artifact, onnx, tflite

FORMATS = ('tflite', 'onnx')


def _class_names(b) -> list[str] | None:
  try:
    return list(b.info.features['label'].names)
  except Exception:  # pylint: disable=broad-except
    return None


def input_section(spec, b, shape: list[int], quantization: dict) -> dict:
  """The sidecar's `input`: how an app turns the dataset's raw examples
  (feature `spec.input_key` of `b`, as tfds stores it) into the file's
  input tensor, as kd's eval pipeline does (`kd.data.input_pipeline`):

    x = (raw / divide_by - mean) / std      mean, std per channel (last axis)

  `divide_by` is 255 for uint8 pixels and 1 for anything else (MNIST-1D's
  float signals are never divided). ImageNet resizes first (`resize`). An
  int8 file then takes q = clip(round(x / scale + zero_point), -128, 127).
  """
  feature = b.info.features[spec.input_key]
  raw_dtype = np.dtype(feature.np_dtype).name
  divide_by = 255.0 if raw_dtype == 'uint8' else 1.0
  kind = 'image' if spec.input_key == 'image' else 'signal'
  raw = 'pixels' if kind == 'image' else spec.input_key
  layout = ('[batch, height, width, channels]' if kind == 'image' else
            '[batch, length, channels]')
  scaled = f'{raw} / 255' if divide_by != 1 else raw
  formula = (f'x = ({scaled} - mean) / std, mean {list(spec.mean)} and std '
             f'{list(spec.std)} per channel (last axis)')
  if divide_by == 1:
    formula += f'; {raw} as stored ({raw_dtype}), not divided by 255'
  section = {
      'kind': kind, 'shape': shape, 'layout': layout,
      'dtype': quantization['input_dtype'],
      'source': {'dataset': b.info.name, 'tfds_name': b.info.full_name,
                 'feature': spec.input_key, 'dtype': raw_dtype,
                 'shape': list(feature.shape), 'label': 'label',
                 'split': 'test'},
      'divide_by': divide_by, 'mean': list(spec.mean), 'std': list(spec.std),
  }
  if spec.augment == 'inception_crop_flip':  # kd.data's eval resize.
    size = spec.input_shape[0]
    section['resize'] = {'shorter_side': round(size / 0.875),
                         'method': 'bilinear', 'central_crop': size}
    formula = (f'resize the shorter side to {round(size / 0.875)} '
               f'(bilinear), crop the central {size}x{size}; then {formula}')
  if quantization['input_dtype'] != 'float32':
    scale, zero = quantization['input_scale'], quantization['input_zero_point']
    info = np.iinfo(quantization['input_dtype'])
    section['quantize'] = {'scale': scale, 'zero_point': zero,
                           'min': int(info.min), 'max': int(info.max)}
    formula += (f'; then q = clip(round(x / {scale!r} + ({zero})), '
                f'{info.min}, {info.max}) as {quantization["input_dtype"]}')
  section['formula'] = (f'{formula}; {section["dtype"]} {shape} {layout}')
  return section


def output_section(quantization: dict, softmax: bool) -> dict:
  """The sidecar's `output`: an int8 file's values dequantize as
  (q - zero_point) * scale (argmax needs no dequantizing)."""
  section = {'dtype': quantization['output_dtype'],
             'kind': 'probabilities' if softmax else 'logits',
             'formula': 'class = argmax(output[i])'}
  if quantization['output_dtype'] != 'float32':
    scale = quantization['output_scale']
    zero = quantization['output_zero_point']
    section['dequantize'] = {'scale': scale, 'zero_point': zero}
    section['formula'] = (f'{section["kind"]} = (q - ({zero})) * {scale!r}; '
                          'class = argmax')
  return section


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
  spec = data.spec(d.name, kw['image_size'], kw['data_dir'])
  b = data.builder(d.name, kw['data_dir'], d.download, kw['image_size'])
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
      'input': input_section(spec, b, [batch_size or -1, *spec.input_shape],
                             runner.quantization),
      'output': output_section(runner.quantization, softmax),
      'quantization': runner.quantization,
      'class_names': _class_names(b),
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
        f'{format}_batch1': timing.latency_ms(runner.predict, x_test[:1]),
        'jax_batch1': timing.model_latency_ms(model, variables,
                                                spec.input_shape)}
  artifact.write(out_path, blob, sidecar)
  return sidecar
