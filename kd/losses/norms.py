"""Vector norms safe to differentiate at zero, and the mean squared error.

jnp.linalg.norm has a NaN gradient at the zero vector (sqrt'(0) * 0), which
real features hit: a dead ReLU layer, or the zero difference of an example
with itself in RKD's angle term. Floors under the square root keep values
unchanged for any non-zero vector and give a zero gradient at zero.
"""
import jax.numpy as jnp


def norm(x, axis=-1, keepdims=False, floor: float = 1e-30):
  return jnp.sqrt(jnp.maximum(jnp.sum(x * x, axis=axis, keepdims=keepdims),
                              floor))


def mse(a, b, axis=-1):
  """mean((a - b)^2) over `axis` (an int or a tuple of ints)."""
  return jnp.mean((a - b) ** 2, axis)


def normalize(x, axis=-1, eps: float = 1e-12):
  """x / max(|x|, eps), as torch.nn.functional.normalize."""
  return x / jnp.maximum(norm(x, axis, keepdims=True), eps)
