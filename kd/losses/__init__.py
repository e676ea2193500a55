"""Distillation losses: small pure functions, each documented with its formula.

All return float32 scalars averaged over the batch and are differentiable in
their student arguments.
"""
import numpy as np

from kd.losses.classification import cross_entropy
from kd.losses.contrastive import crd
from kd.losses.features import (activation_boundary, attention_transfer,
                                factor_transfer, hint, match_spatial, nst,
                                vid)
from kd.losses.logits import dist, dkd, kd, logit_mse
from kd.losses.relations import (correlation_congruence, pkt, rkd,
                                 similarity_preserving)

LOSSES = {f.__name__: f for f in (
    kd, dkd, dist, logit_mse, hint, attention_transfer, similarity_preserving,
    rkd, pkt, correlation_congruence, nst, factor_transfer, vid, crd,
    activation_boundary)}


def get(name: str):
  if name not in LOSSES:
    raise ValueError(f'unknown loss {name!r}; valid losses: '
                     f'{", ".join(sorted(LOSSES))}')
  return LOSSES[name]


# What each loss pairs: 'logits' [batch, classes] of equal shape; 'map'
# feature maps (spatial sizes pooled to the smaller; 'same_channels' also
# needs equal widths); 'batch' anything with equal batch sizes; 'same'
# anything of equal size once flattened.
INPUTS = {'kd': 'logits', 'dkd': 'logits', 'dist': 'logits',
          'logit_mse': 'logits', 'hint': 'same_channels', 'vid': 'same_channels',
          'attention_transfer': 'map', 'factor_transfer': 'map', 'nst': 'map',
          'similarity_preserving': 'batch', 'rkd': 'batch', 'pkt': 'batch',
          'correlation_congruence': 'same', 'crd': 'batch',
          'activation_boundary': 'same_channels'}


def register(fn, inputs: str, name: str = '') -> None:
  """Adds a loss `fn` under `name` (default its __name__) so configs can
  name it; `inputs` is its kind in `INPUTS`."""
  name = name or fn.__name__
  if name in LOSSES and LOSSES[name] is not fn:
    raise ValueError(f'loss {name!r} is already registered')
  LOSSES[name], INPUTS[name] = fn, inputs


def check_inputs(name: str, student_shape, teacher_shape) -> None:
  """Raises ValueError naming the loss and both shapes if they cannot pair."""
  s, t = tuple(student_shape), tuple(teacher_shape)
  kind = INPUTS[get(name) and name]
  fail = lambda why: ValueError(
      f'loss {name!r} cannot pair student {s} with teacher {t}: {why}')
  if s[:1] != t[:1]:
    raise fail('batch sizes differ')
  if kind == 'logits' and (len(s) != 2 or s != t):
    raise fail('needs [batch, classes] logits of the same shape')
  if kind == 'same' and np.prod(s) != np.prod(t):
    raise fail('needs equal feature sizes (add an adapter to project one)')
  if kind in ('map', 'same_channels'):
    if len(s) < 3 or len(s) != len(t):
      raise fail('needs two feature maps [batch, *spatial, channels] of the '
                 'same rank')
    for a, b in zip(s[1:-1], t[1:-1]):
      if max(a, b) % min(a, b):
        raise fail(f'spatial size {max(a, b)} is not a multiple of '
                   f'{min(a, b)}, so it cannot be average-pooled to it')
    if kind == 'same_channels' and s[-1] != t[-1]:
      raise fail(f'channels differ ({s[-1]} vs {t[-1]}); use the '
                 "'regressor' adapter to map the student's")

from kd.losses import deit  # pylint: disable=g-import-not-at-top,wrong-import-position
register(deit.hard_distillation, 'logits')
register(deit.label_cross_entropy, 'logits')
