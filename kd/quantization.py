"""Simulated int8 for quantization-aware training (QAT).

Weights: symmetric, per output channel (the last axis), as TFLite's int8
kernels. Activations entering every Dense/Conv: asymmetric, per tensor, range
from the batch, as the converter's calibration produces. Rounding passes
gradients straight through (STE: d round(x) / dx := 1).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp


def _ste(x, q):
  return x + jax.lax.stop_gradient(q - x)


def fake_quant_weights(w, bits: int = 8):
  """w rounded to the symmetric int grid of its output channel."""
  qmax = 2 ** (bits - 1) - 1
  axes = tuple(range(w.ndim - 1))
  scale = jax.lax.stop_gradient(
      jnp.maximum(jnp.max(jnp.abs(w), axis=axes, keepdims=True), 1e-12) / qmax)
  return _ste(w, jnp.clip(jnp.round(w / scale), -qmax, qmax) * scale)


def fake_quant_activations(x, bits: int = 8):
  """x rounded to the asymmetric int grid spanning [min(x, 0), max(x, 0)]."""
  lo = jax.lax.stop_gradient(jnp.minimum(jnp.min(x), 0.0))
  hi = jax.lax.stop_gradient(jnp.maximum(jnp.max(x), 0.0))
  levels = 2 ** bits - 1
  scale = jnp.maximum(hi - lo, 1e-12) / levels
  zero = jnp.round(-lo / scale)
  q = (jnp.clip(jnp.round(x / scale) + zero, 0, levels) - zero) * scale
  return _ste(x, q)


def quantize_params(params):
  """Fake-quantizes every kernel (arrays of rank >= 2); biases stay float,
  as int32 biases in TFLite are effectively exact."""
  return jax.tree.map(lambda p: fake_quant_weights(p) if p.ndim >= 2 else p,
                      params)


def _quantize_inputs(next_fun, args, kwargs, context):
  if isinstance(context.module, (nn.Dense, nn.Conv)) and \
      context.method_name == '__call__':
    args = (fake_quant_activations(args[0]),) + tuple(args[1:])
  return next_fun(*args, **kwargs)


def apply(model: nn.Module, variables, *args, **kwargs):
  """`model.apply` with simulated int8 weights and layer inputs."""
  variables = dict(variables, params=quantize_params(variables['params']))
  with nn.intercept_methods(_quantize_inputs):
    return model.apply(variables, *args, **kwargs)
