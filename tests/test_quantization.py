"""Simulated int8: values on the grid, straight-through gradients."""
import jax
import jax.numpy as jnp
import numpy as np

from kd import models, quantization


def test_weights_land_on_a_symmetric_per_channel_grid():
  w = jnp.asarray(np.random.default_rng(0).normal(size=(5, 3)), jnp.float32)
  q = np.asarray(quantization.fake_quant_weights(w))
  scale = np.abs(np.asarray(w)).max(0) / 127
  steps = q / scale
  np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)
  assert np.abs(q - np.asarray(w)).max() <= scale.max() / 2 + 1e-6
  np.testing.assert_allclose(np.abs(q).max(0), np.abs(np.asarray(w)).max(0),
                             rtol=1e-6)


def test_activations_grid_includes_zero_and_spans_the_range():
  x = jnp.linspace(-1.0, 3.0, 101)
  q = np.asarray(quantization.fake_quant_activations(x))
  scale = 4.0 / 255
  assert np.abs(q - np.asarray(x)).max() <= scale / 2 + 1e-6
  assert float(quantization.fake_quant_activations(jnp.zeros(3))[0]) == 0.0


def test_gradients_pass_straight_through():
  g = jax.grad(lambda w: jnp.sum(quantization.fake_quant_weights(w) * 2.0))(
      jnp.ones((4, 2)) * 0.3)
  np.testing.assert_allclose(g, 2.0)


def test_quantized_apply_stays_close_to_float():
  m = models.create('cnn', 10)
  x = np.random.default_rng(1).normal(size=(4, 8, 8, 1)).astype(np.float32)
  v = m.init(jax.random.key(0), x)
  ref, _ = m.apply(v, x)
  q, feats = quantization.apply(m, v, x)
  assert q.shape == ref.shape and 'embedding' in feats
  assert 0 < float(jnp.max(jnp.abs(q - ref))) < 0.1 * float(jnp.max(jnp.abs(ref)))
