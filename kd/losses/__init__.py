"""Distillation losses: small pure functions, each documented with its formula.

One way for every loss:
- Each loss has one public name, in its module, and holds the math **per
  position**: `kd.losses.logits.kd(s, t)` returns [B] for classifier logits
  [B, C] and [B, T] for a language model's [B, T, V] (the leading axes kept,
  the class axis reduced), like optax's losses. `divergences` has the
  vocabulary divergences (forward and reverse KL, generalized JSD, TVD, skew
  KLs, top-k KL and the divergences on a cached top k, `chunked`),
  `cross_tokenizer` those between a student and a teacher of different
  vocabularies (ULD, the aligned hybrid), `features` the feature-map and
  hidden-state losses, `classification` the label cross-entropy.
- Per-position values are reduced once, by `masked_mean(values, mask)`: the
  mean over the positions the mask keeps, classifier and language model
  alike. A training step does it with the batch's `mask`; `get(name)` is a
  registered loss's scalar form, `get('kd')(s, t, 4.0, mask=m)`, the mask a
  keyword after the loss's own arguments for every per-position loss.
- Losses that relate the examples of a batch to each other (rkd,
  similarity_preserving, pkt, correlation_congruence, dist, crd) have no
  per-position values: they return the batch's scalar, registered with
  `per_position=False`, and see padded examples like real ones.
- `fsp` and `hcl` compare several maps per model: their arguments are
  tuples of maps (a term names the outputs comma-separated).
- `LOSSES` records, per name, a `LossSpec`: the function, its input kind,
  whether it takes the batch's `labels`, and whether it is per position. A
  training step calls `spec.fn` and reduces per-position values once with
  the batch's mask. `register` adds a loss (experiments do).
- `chunked(fn, chunk_size)` computes a per-position vocabulary loss a chunk
  of positions at a time, so [B, T, V] probabilities are never all held (a
  `Term`'s `chunk_size` kwarg does this in a step).

Every value is float32 and differentiable in the student's arguments; the
teacher's receive no gradient.
"""
import dataclasses
from typing import Callable

import numpy as np

from kd.losses import classification
from kd.losses import contrastive
from kd.losses import cross_tokenizer
from kd.losses import deit
from kd.losses import divergences
from kd.losses import features
from kd.losses import logits
from kd.losses import reduce
from kd.losses import relations
from kd.losses.reduce import masked_mean

# What a loss pairs: 'logits' [..., classes] of equal shape (a classifier's
# [batch, classes] or a language model's [batch, length, vocab]); 'topk' the
# student's logits with the teacher's cached top-k (values, indices); 'map'
# feature maps (spatial sizes pooled to the smaller; 'same_channels' also
# needs equal widths); 'same_shape' equal shapes (hidden states [B, T, D]);
# 'batch' anything with equal batch sizes; 'same' anything of equal size
# once flattened; 'maps' several feature maps per model (a term naming its
# outputs comma-separated: tuples reach the loss), paired in order as
# 'same_channels'; 'aligned' a language model's logits [batch, length,
# vocab] against a teacher's of another tokenizer [batch, length', vocab']
# (cross-tokenizer distillation: a step pairs the positions by the batch's
# byte alignment, `kd.data.align`).
INPUT_KINDS = ('logits', 'topk', 'map', 'same_channels', 'same_shape',
               'batch', 'same', 'maps', 'aligned')


@dataclasses.dataclass(frozen=True)
class LossSpec:
  """A registered loss. `fn(student, teacher, **kwargs)` returns values per
  position if `per_position`, else the batch's scalar; `mean` is the scalar
  form (`fn` itself for batch-level losses); with `labels` the step passes
  the batch's integer labels as `labels=`."""
  fn: Callable
  mean: Callable
  inputs: str
  labels: bool = False
  per_position: bool = True


LOSSES: dict[str, LossSpec] = {}


def register(fn, inputs: str, *, labels: bool = False,
             per_position: bool = True, name: str = '') -> Callable:
  """Adds loss `fn` under `name` (default its __name__) so configs can name
  it, and returns `fn`. `inputs` is one of `INPUT_KINDS`."""
  name = name or fn.__name__
  if inputs not in INPUT_KINDS:
    raise ValueError(f'loss {name!r}: unknown input kind {inputs!r}; valid: '
                     f'{", ".join(INPUT_KINDS)}')
  if name in LOSSES:
    if LOSSES[name].fn is not fn:
      raise ValueError(f'loss {name!r} is already registered')
    return fn
  mean = reduce.mean_of(fn) if per_position else fn
  LOSSES[name] = LossSpec(fn, mean, inputs, labels, per_position)
  return fn


def spec(name: str) -> LossSpec:
  if name not in LOSSES:
    raise ValueError(f'unknown loss {name!r}; valid losses: '
                     f'{", ".join(sorted(LOSSES))}')
  return LOSSES[name]


def get(name: str) -> Callable:
  """The scalar form of loss `name`."""
  return spec(name).mean

register(logits.kd, 'logits')
register(logits.dkd, 'logits', labels=True)
register(logits.dist, 'logits', per_position=False)
register(logits.logit_mse, 'logits')
register(deit.hard_distillation, 'logits')
register(deit.label_cross_entropy, 'logits', labels=True)
register(features.hint, 'same_channels')
register(features.attention_transfer, 'map')
register(features.factor_transfer, 'map')
register(features.nst, 'map')
register(features.vid, 'same_channels')
register(features.activation_boundary, 'same_channels')
register(features.hidden_mse, 'same_shape')
register(features.hidden_cosine, 'same_shape')
register(features.attention_kl, 'same_shape')
register(features.value_relation, 'batch')
register(relations.similarity_preserving, 'batch', per_position=False)
register(relations.rkd, 'batch', per_position=False)
register(relations.pkt, 'batch', per_position=False)
register(relations.correlation_congruence, 'same', per_position=False)
register(contrastive.crd, 'batch', per_position=False)
register(features.ofd, 'same_channels')
register(features.fsp, 'maps')
register(features.hcl, 'maps')
register(divergences.forward_kl, 'logits')
register(divergences.reverse_kl, 'logits')
register(divergences.generalized_jsd, 'logits')
register(divergences.tvd, 'logits')
register(divergences.skew_kl, 'logits')
register(divergences.skew_reverse_kl, 'logits')
register(divergences.topk_kl, 'logits')
register(divergences.topk_kl_cached, 'topk')
register(divergences.topk_reverse_kl_cached, 'topk')
register(divergences.topk_jsd_cached, 'topk')
register(divergences.topk_mixture_kl_cached, 'topk')
register(cross_tokenizer.uld, 'aligned')
register(cross_tokenizer.hybrid_kl, 'aligned')
chunked = divergences.chunked


def _is_shape_tuple(shape) -> bool:
  return bool(shape) and all(isinstance(d, (tuple, list)) for d in shape)


def check_inputs(name: str, student_shape, teacher_shape) -> None:
  """Raises ValueError naming the loss and both shapes if they cannot pair
  (for 'topk', `teacher_shape` is that of the cached values; for 'maps',
  each side is a tuple of shapes)."""
  kind = spec(name).inputs
  several = [_is_shape_tuple(x) for x in (student_shape, teacher_shape)]
  if kind == 'maps' or any(several):
    fail = lambda why: ValueError(
        f'loss {name!r} cannot pair student {student_shape} with teacher '
        f'{teacher_shape}: {why}')
    if kind != 'maps':
      raise fail('it takes one output per model, not several')
    if not all(several) or len(student_shape) != len(teacher_shape) or len(
        student_shape) < 2:
      raise fail('needs two or more feature maps per model, named '
                 "comma-separated (e.g. 'stage-2,stage-1'), as many for each")
    for s, t in zip(student_shape, teacher_shape):
      _check_pair(name, 'same_channels', tuple(s), tuple(t))
    return
  _check_pair(name, kind, tuple(student_shape), tuple(teacher_shape))


def _check_pair(name, kind, s, t) -> None:
  fail = lambda why: ValueError(
      f'loss {name!r} cannot pair student {s} with teacher {t}: {why}')
  if s[:1] != t[:1]:
    raise fail('batch sizes differ')
  if kind == 'logits' and (len(s) < 2 or s != t):
    raise fail('needs logits [batch, classes] or [batch, length, vocab] of '
               'the same shape')
  if kind == 'aligned' and (len(s) != 3 or len(t) != 3):
    raise fail('needs language-model logits [batch, length, vocab] on both '
               'sides (the vocabularies and lengths may differ)')
  if kind == 'topk' and (len(s) < 2 or s[:-1] != t[:-1] or t[-1] > s[-1]):
    raise fail('needs student logits [..., vocab] and teacher top-k values '
               '[..., k] with the same leading axes and k <= vocab')
  if kind == 'same' and np.prod(s) != np.prod(t):
    raise fail('needs equal feature sizes (add an adapter to project one)')
  if kind == 'same_shape' and s != t:
    raise fail('needs equal shapes'
               + ("; widths differ: use the 'linear' adapter to project the "
                  "student's" if s[:-1] == t[:-1] else ''))
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

