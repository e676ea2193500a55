"""Reducing per-position loss values to the scalar that is optimised.

A per-position loss returns one value per position: `[B]` for a classifier's
`[B, C]` logits, `[B, T]` for a language model's `[B, T, V]`. The mean is
taken once, here, weighted by the batch's mask (padding, packed-sequence
boundaries), so images and tokens are counted the same way.
"""
import functools
import inspect

import jax.numpy as jnp


def masked_mean(values, mask=None):
  """sum_i m_i v_i / sum_i m_i over the positions i, 0 when every m_i is 0.

  `mask` [B] or [B, T] weights the leading axes of `values`; axes of `values`
  beyond the mask's (e.g. the spatial axes of a feature map's values) are
  averaged first. With no mask, the plain mean of `values`.
  """
  values = jnp.asarray(values)
  if mask is None:
    return jnp.mean(values)
  mask = jnp.asarray(mask, jnp.float32)
  if values.shape[:mask.ndim] != mask.shape:
    raise ValueError(f'a mask of shape {mask.shape} cannot weight loss values '
                     f'of shape {values.shape}: the mask must cover their '
                     'leading (position) axes')
  values = jnp.mean(values, axis=tuple(range(mask.ndim, values.ndim)))
  count = jnp.sum(mask)
  # The where keeps the gradient finite when every position is masked.
  return jnp.sum(mask * values) / jnp.where(count > 0, count, 1.0)


def mean_of(fn):
  """The scalar form of per-position loss `fn`: `masked_mean` of its values.
  The returned function takes `fn`'s arguments and `mask`, keyword-only at
  the end (every loss, classifier or language model, the same way)."""
  signature = inspect.signature(fn)
  signature = signature.replace(parameters=[
      *signature.parameters.values(),
      inspect.Parameter('mask', inspect.Parameter.KEYWORD_ONLY, default=None)])

  @functools.wraps(fn)
  def mean(*args, mask=None, **kwargs):
    return masked_mean(fn(*args, **kwargs), mask)

  mean.__signature__ = signature
  mean.__doc__ = (f'Mean over the unmasked positions of:\n{fn.__doc__}')
  return mean
