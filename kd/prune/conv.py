"""Channel pruning of kd's ConvNets (`cnn`, `cnn1d`: conv{i} -> ReLU
[-> 2x max-pool] ..., flatten, dense -> ReLU, head).

  --width=channels:0.5,dense:0.5,by:activation    (or by:l1)
  --width=conv0:16,conv1:0.25                     (per conv; overrides channels)

Importance of output channel c of conv i (and of dense unit c), by

  activation  a[b, p, c], the post-ReLU activation at every position p on
              the calibration batches, aggregated as the transformer's
              (Minitron): I_c = sqrt(sum_b (mean_p a[b, p, c])^2);
  l1          sum |W[..., c]|, the L1 norm of the channel's filter (its
              incoming weights; Li et al. 2017, "Pruning Filters for
              Efficient ConvNets"): no data read.

A kept channel is cut from its conv's kernel and bias (the output axis),
the next conv's kernel (the input axis) and, after the last conv, from the
dense kernel's rows: flattening [B, (H,) W, C] puts channel c of position
p at row p * C + c. A kept dense unit: the dense kernel's column, its bias
and the head's row. ReLU and max-pooling act per channel, so the pruned
net computes exactly what the full one does with the dropped channels'
filters zeroed. Width only: without a conv layer the next one's input
would change shape.
"""
import dataclasses
from typing import NamedTuple

import jax
import numpy as np

from kd import models
from kd.prune import targets

MODELS = ('cnn1d', 'cnn')
BY = {'activation': 'the post-ReLU activation on the calibration batches',
      'l1': "the L1 norm of each filter's weights, Li et al. 2017"}


class Sizes(NamedTuple):
  channels: tuple[int, ...]
  dense: int


def sizes(name: str, kwargs: dict) -> Sizes:
  """The sizes of model `name`(`kwargs`), its defaults filled in."""
  m = models.create(name, 2, **kwargs)
  return Sizes(tuple(m.channels), m.dense)


def units(s: Sizes) -> tuple[str, ...]:
  return ('channels', *(f'conv{i}' for i in range(len(s.channels))), 'dense')


def target_sizes(name: str, kwargs: dict, width: str, depth: str = ''
                 ) -> tuple[Sizes, str]:
  """The pruned sizes and the importance criterion for the `--width` text,
  refusing targets the model cannot take."""
  if depth:
    raise ValueError(f'--depth={depth!r}: a {name} is pruned in width only '
                     '(conv channels, dense units); drop --depth')
  s = sizes(name, kwargs)
  w = targets.width(width, units(s), BY)
  channels = []
  for i, full in enumerate(s.channels):
    key = f'conv{i}' if f'conv{i}' in w else 'channels'
    channels.append(targets.size(key, w[key], full, of=f'conv{i} channels')
                    if key in w else full)
  dense = (targets.size('dense', w['dense'], s.dense, of='dense units')
           if 'dense' in w else s.dense)
  return Sizes(tuple(channels), dense), w['by']


def pruned_kwargs(name: str, kwargs: dict, width: str, depth: str = ''
                  ) -> dict:
  """The kwargs of the pruned `name`: the same net with fewer channels
  (and dense units); unchanged defaults stay unnamed."""
  s = sizes(name, kwargs)
  p, _ = target_sizes(name, kwargs, width, depth)
  out = dict(kwargs)
  if p.channels != s.channels or 'channels' in kwargs:
    out['channels'] = p.channels
  if p.dense != s.dense or 'dense' in kwargs:
    out['dense'] = p.dense
  return out


@dataclasses.dataclass
class Scores:
  """Importance of every conv's output channels (`channels[i]` [C_i]) and
  of the dense units (`dense` [D]); higher: more important."""
  channels: list
  dense: np.ndarray
  by: str

  def to_json(self) -> dict:
    return {'by': self.by,
            'aggregation': ('batch L2 of the position mean (Minitron)'
                            if self.by == 'activation' else
                            'L1 norm of the incoming weights'),
            'channels': {f'conv{i}': v.tolist()
                         for i, v in enumerate(self.channels)},
            'dense': self.dense.tolist()}


def l1_scores(params, num_convs: int) -> Scores:
  """sum |W| over every axis but the output channel's."""
  l1 = lambda w: np.abs(np.asarray(w, np.float64)).reshape(
      -1, np.shape(w)[-1]).sum(0)
  return Scores([l1(params[f'conv{i}']['kernel']) for i in range(num_convs)],
                l1(params['dense']['kernel']), 'l1')


def capture_fn(model, num_convs: int):
  """`f(variables, x)` -> [sum_b (mean_p a[b, p, c])^2 per conv, the same
  for the dense units (one position)]."""

  def f(variables, x):
    _, feats = model.apply(variables, x, train=False)
    out = []
    for i in range(num_convs):
      a = feats[f'stage{i}']  # Post-ReLU, [B, (H,) W, C].
      out.append((a.reshape(a.shape[0], -1, a.shape[-1]).mean(1)**2).sum(0))
    return out, (feats['embedding']**2).sum(0)

  return f


def activation_scores(model, variables, batches, num_convs: int) -> Scores:
  f = jax.jit(capture_fn(model, num_convs))
  channels, dense = [0.0] * num_convs, 0.0
  for batch in batches:
    c, d = f(variables, batch['image'])
    channels = [t + np.asarray(v, np.float64) for t, v in zip(channels, c)]
    dense = dense + np.asarray(d, np.float64)
  return Scores([np.sqrt(c) for c in channels], np.sqrt(dense), 'activation')


def top(scores, n: int) -> np.ndarray:
  """The indices of the `n` highest scores, in their order."""
  return np.sort(np.argsort(-np.asarray(scores), kind='stable')[:n])


def slice_params(params, kept: list, dense: np.ndarray) -> dict:
  """The parameters with conv i's channels `kept[i]` and dense units
  `dense` only."""
  n = len(kept)
  want = {*(f'conv{i}' for i in range(n)), 'dense', 'head'}
  if set(params) != want:
    raise ValueError(f'kd.prune.conv expects parameters {sorted(want)}, '
                     f'found {sorted(params)}')
  params = jax.tree.map(np.asarray, params)
  out = {}
  for i in range(n):
    k = np.take(params[f'conv{i}']['kernel'], kept[i], axis=-1)
    if i:
      k = np.take(k, kept[i - 1], axis=-2)
    out[f'conv{i}'] = {'kernel': k,
                       'bias': np.take(params[f'conv{i}']['bias'], kept[i])}
  w = params['dense']['kernel']
  last = np.shape(params[f'conv{n - 1}']['kernel'])[-1]
  # Rows: position p, channel c at p * C + c.
  w = w.reshape(-1, last, w.shape[-1])[:, kept[-1]].reshape(-1, w.shape[-1])
  out['dense'] = {'kernel': np.take(w, dense, axis=1),
                  'bias': np.take(params['dense']['bias'], dense)}
  out['head'] = {'kernel': np.take(params['head']['kernel'], dense, axis=0),
                 'bias': params['head']['bias']}
  return out


def prune(name: str, kwargs: dict, num_classes: int, variables: dict,
          batches, width: str, depth: str = ''):
  """(pruned kwargs, pruned params, Scores) of `variables` of
  `name`(`kwargs`), the criterion reading `batches` (kd batches: 'image')
  where it needs data."""
  s = sizes(name, kwargs)
  p, by = target_sizes(name, kwargs, width, depth)
  n = len(s.channels)
  if by == 'l1':
    scores = l1_scores(variables['params'], n)
  else:
    model = models.create(name, num_classes, **kwargs)
    scores = activation_scores(model, variables, batches, n)
  kept = [top(scores.channels[i], p.channels[i]) for i in range(n)]
  params = slice_params(variables['params'], kept, top(scores.dense, p.dense))
  return pruned_kwargs(name, kwargs, width, depth), params, scores
