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


def mean_of(fn, mask_position: int | None = None):
  """The scalar form of per-position loss `fn`: `masked_mean` of its values.

  The returned function takes `fn`'s arguments and a `mask`, keyword-only at
  the end, or with `mask_position` the positional argument at that index
  (the language-model losses' `f(student, teacher, mask=None, ...)`).
  """
  signature = inspect.signature(fn)
  params = list(signature.parameters.values())
  if mask_position is None:
    params.append(inspect.Parameter('mask', inspect.Parameter.KEYWORD_ONLY,
                                    default=None))
  else:
    params.insert(mask_position, inspect.Parameter(
        'mask', inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None))
  signature = signature.replace(parameters=params)

  @functools.wraps(fn)
  def mean(*args, **kwargs):
    arguments = signature.bind(*args, **kwargs).arguments
    mask = arguments.pop('mask', None)
    return masked_mean(fn(**arguments), mask)

  mean.__signature__ = signature
  mean.__doc__ = (f'Mean over the unmasked positions of:\n{fn.__doc__}')
  return mean
