"""jax2tf -> TFLite: float parity, quantized variants, errors."""
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd import latency, models
from kd.export import tflite

CASES = {'mlp': (8, 8, 1), 'cnn': (8, 8, 1), 'cnn1d': (40, 1)}


@pytest.fixture(scope='module', params=sorted(CASES))
def model(request):
  name, shape = request.param, CASES[request.param]
  m = models.create(name, 10)
  variables = m.init(jax.random.key(0), jnp.zeros((1, *shape)))
  predict = lambda x: m.apply(variables, x, train=False)[0]
  x = np.random.default_rng(0).normal(size=(16, *shape)).astype(np.float32)
  return {'predict': predict, 'shape': shape, 'x': x,
          'ref': np.asarray(jax.jit(predict)(x)),
          'float32': tflite.convert(predict, shape)}


def test_float32_matches_jax_logits(model):
  out = tflite.TFLiteModel(model['float32']).predict(model['x'])
  assert out.shape == model['ref'].shape
  assert np.max(np.abs(out - model['ref'])) < 1e-4


def test_dynamic_batch(model):
  blob = tflite.convert(model['predict'], model['shape'], batch_size=None)
  m = tflite.TFLiteModel(blob)
  for n in (5, 2):
    np.testing.assert_allclose(m.predict(model['x'][:n]), model['ref'][:n],
                               atol=1e-4)


def test_weight_quantized_variants_are_smaller_and_close(model):
  size32 = len(model['float32'])
  for q in ('fp16', 'dynamic'):
    blob = tflite.convert(model['predict'], model['shape'], quantize=q)
    assert len(blob) < 0.7 * size32, q
    out = tflite.TFLiteModel(blob).predict(model['x'])
    assert np.max(np.abs(out - model['ref'])) < 0.1 * np.abs(
        model['ref']).max(), q


def test_int8_has_integer_io_and_keeps_the_argmax(model):
  blob = tflite.convert(model['predict'], model['shape'], quantize='int8',
                        representative_data=model['x'])
  m = tflite.TFLiteModel(blob)
  q = m.quantization
  assert q['input_dtype'] == 'int8' and q['output_dtype'] == 'int8'
  # Affine int8 over the calibration range (widened to hold 0):
  # scale = (max - min) / 255, zero point = round(-128 - min / scale).
  for side, values in (('input', model['x']), ('output', model['ref'])):
    lo, hi = min(values.min(), 0.0), max(values.max(), 0.0)
    assert q[f'{side}_scale'] == pytest.approx((hi - lo) / 255, rel=1e-5)
    assert q[f'{side}_zero_point'] == round(-128 - lo / ((hi - lo) / 255))
  assert len(blob) < 0.5 * len(model['float32'])
  agree = np.mean(m.predict(model['x']).argmax(-1) == model['ref'].argmax(-1))
  assert agree >= 0.75


def test_evaluate_reports_accuracy(model):
  labels = model['ref'].argmax(-1)
  result = tflite.test_accuracy(model['float32'], model['x'], labels)
  assert result['accuracy'] == 1.0 and result['logits'].shape == (16, 10)


def test_bad_arguments_are_explained():
  f = lambda x: x * 2.0
  with pytest.raises(ValueError, match="unknown quantize 'int4'.*int8"):
    tflite.convert(f, (4,), quantize='int4')
  with pytest.raises(ValueError, match='needs representative_data'):
    tflite.convert(f, (4,), quantize='int8')


@pytest.mark.parametrize('f, shape, op', [
    # A LAPACK custom call: the converter only names the wrapping
    # tf.XlaCallModule, so the op comes from the lowered JAX program.
    (lambda x: jnp.linalg.svd(x.reshape(4, 4))[1], (4, 4),
     r'lapack_sgesdd\w* \(at .*svd'),
    # A StableHLO op with no TFLite legalization, named by the converter.
    (lambda x: jnp.sort(x, axis=-1), (16,), r'vhlo\.sort_v1 \(at .*sort'),
], ids=['custom_call', 'stablehlo_op'])
def test_op_without_builtin_kernel_is_named(f, shape, op):
  with pytest.raises(tflite.ExportError,
                     match=op + r'.*Only builtin TFLite ops'):
    tflite.convert(f, shape)


def test_fixed_batch_larger_than_one_runs_any_batch():
  w = np.random.default_rng(1).normal(size=(6, 3)).astype(np.float32)
  f = lambda x: x @ w
  x = np.random.default_rng(2).normal(size=(7, 6)).astype(np.float32)
  m = tflite.TFLiteModel(tflite.convert(f, (6,), batch_size=4))
  np.testing.assert_allclose(m.predict(x), x @ w, atol=1e-5)
  m8 = tflite.TFLiteModel(tflite.convert(
      f, (6,), batch_size=4, quantize='int8', representative_data=x))
  assert m8.input_details['shape'][0] == 4
  assert np.mean(m8.predict(x).argmax(-1) == (x @ w).argmax(-1)) >= 0.7


def test_latency_is_the_median_after_the_warm_up(monkeypatch):
  ticks = iter([0.0, 0.004, 1.0, 1.001, 2.0, 2.009])  # Calls of 4, 1, 9 ms.
  monkeypatch.setattr(latency, 'time',
                      types.SimpleNamespace(perf_counter=lambda: next(ticks)))
  calls = []
  ms = latency.latency_ms(calls.append, 'x', warmup=2, runs=3)
  assert calls == ['x'] * 5 and ms == pytest.approx(4.0)


def test_latency_is_measured_for_both_runtimes():
  m = models.create('mlp', 10)
  variables = m.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
  predict = lambda x: m.apply(variables, x)[0]
  x1 = np.zeros((1, 8, 8, 1), np.float32)
  assert tflite.latency_ms(jax.jit(predict), x1, warmup=1, runs=5) > 0
  assert latency.model_latency_ms(m, variables, (8, 8, 1), runs=5) > 0
  tfl = tflite.TFLiteModel(tflite.convert(predict, (8, 8, 1)))
  ms = tflite.latency_ms(tfl.predict, x1, warmup=1, runs=5)
  assert isinstance(ms, float) and ms > 0


def test_failed_op_is_named_with_its_layer():
  import flax.linen as nn  # pylint: disable=import-outside-toplevel

  class Pool1D(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.max_pool(nn.Dense(4, name='proj')(x), (2,), strides=(2,))

  m = Pool1D()
  variables = m.init(jax.random.key(0), jnp.zeros((1, 8, 3)))
  x = np.random.default_rng(0).normal(size=(4, 8, 3)).astype(np.float32)
  with pytest.raises(tflite.ExportError,
                     match=r'reduce_window \(at Pool1D/reduce_window'):
    tflite.convert(lambda v: m.apply(variables, v), (8, 3), quantize='int8',
                   representative_data=x)


@pytest.mark.parametrize('name', ['resnet8x4', 'wrn_16_2', 'MobileNetV2',
                                  'ShuffleV2'])
def test_zoo_students_export_with_float_parity(name):
  m = models.create(name, 100)
  x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
  # Compiled, not op by op (hundreds of small programs for these models).
  variables = jax.jit(m.init)(jax.random.key(0), x[:1])
  predict = lambda v: m.apply(variables, v, train=False)[0]  # BN inference.
  lite = tflite.TFLiteModel(tflite.convert(predict, (32, 32, 3)))
  assert np.max(np.abs(lite.predict(x) - np.asarray(jax.jit(predict)(x)))
                ) < 1e-4
  int8 = tflite.TFLiteModel(tflite.convert(
      predict, (32, 32, 3), quantize='int8', representative_data=x))
  assert int8.quantization['input_dtype'] == 'int8'
