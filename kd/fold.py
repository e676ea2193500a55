"""Batch norms folded into the convolutions before them, for a frozen model.

In inference a batch norm is an affine map per channel,

  BN(y) = gamma (y - mean) / sqrt(var + eps) + beta = s y + (beta - s mean),
  s = gamma / sqrt(var + eps),

so a convolution (or dense layer) W x + b that feeds it and nothing else
becomes one convolution with W' = W s (scaling each output channel) and
b' = s (b - mean) + beta, and the batch norm disappears (Ioffe & Szegedy
2015; the usual inference-time rewrite, e.g. TensorRT's and TFLite's).

`fold_batch_norms` finds the pairs without knowing the model: it traces the
model's inference pass once, each `nn.Conv`/`nn.Dense` and `nn.BatchNorm`
call in its own named scope, and folds a layer into a batch norm only when
the layer's output is used by that batch norm alone (not a feature tap, a
shortcut or another layer). The folded model computes the same logits and
features up to float rounding (tests/test_fold.py).
"""
import dataclasses
import re
from typing import Any

import flax.linen as nn
import jax
from jax.extend import core as jax_core
import numpy as np

_TAG = 'kdfold'
_LINEAR = (nn.Conv, nn.Dense)


def _calls(model: nn.Module, variables, example):
  """(calls, jaxpr) of `model`'s inference pass: calls[i] = (module, output
  dtype) of the i-th linear layer or batch norm, whose operations carry the
  name scope f'{_TAG}{i}'."""
  calls = []

  def tag(next_fun, args, kwargs, context):
    module = context.module
    if (context.method_name != '__call__'
        or not isinstance(module, (*_LINEAR, nn.BatchNorm))):
      return next_fun(*args, **kwargs)
    i = len(calls)
    calls.append([module, None])
    with jax.named_scope(f'{_TAG}{i}'):
      out = next_fun(*args, **kwargs)
    calls[i][1] = out.dtype
    return out

  def forward(v, x):
    with nn.intercept_methods(tag):
      return model.apply(v, x, train=False)

  x = jax.ShapeDtypeStruct((1, *example.shape[1:]), example.dtype)
  return calls, jax.make_jaxpr(forward)(variables, x).jaxpr


def _owner(eqn) -> int | None:
  """The innermost tagged call an operation belongs to."""
  found = re.findall(rf'\b{_TAG}(\d+)\b', str(eqn.source_info.name_stack))
  return int(found[-1]) if found else None


def foldable_pairs(calls, jaxpr) -> dict:
  """{layer path: batch norm path} of every linear layer whose output only
  the batch norm reads, both called once, the norm in inference mode over
  the last axis (`_calls`'s calls and jaxpr)."""
  made, uses = {}, {}
  for eqn in jaxpr.eqns:
    owner = _owner(eqn)
    for v in eqn.invars:
      if isinstance(v, jax_core.Var) and v in made and made[v] != owner:
        uses.setdefault(v, set()).add(owner)
    made.update({v: owner for v in eqn.outvars})
  for v in jaxpr.outvars:
    if isinstance(v, jax_core.Var) and v in made:
      uses.setdefault(v, set()).add('output')
  escapes = {}  # Call -> the outside users of each value it hands out.
  for v, users in uses.items():
    escapes.setdefault(made[v], []).append(users)
  paths = [m.path for m, _ in calls]
  pairs = {}
  for i, (module, _) in enumerate(calls):
    if not isinstance(module, _LINEAR) or len(escapes.get(i, ())) != 1:
      continue
    users = escapes[i][0]
    if len(users) != 1 or not isinstance(j := next(iter(users)), int):
      continue
    norm = calls[j][0]
    if (isinstance(norm, nn.BatchNorm) and norm.use_running_average
        and norm.axis == -1 and paths.count(module.path) == 1
        and paths.count(norm.path) == 1):
      pairs[module.path] = norm.path
  return pairs


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def _set(tree, path, value):
  """A copy of nested dict `tree` with `tree[path] = value` (None: deleted)."""
  tree = dict(tree)
  if len(path) == 1:
    if value is None:
      tree.pop(path[0], None)
    else:
      tree[path[0]] = value
    return tree
  tree[path[0]] = _set(tree.get(path[0], {}), path[1:], value)
  return tree


def fold_variables(variables, pairs: dict, epsilons: dict) -> dict:
  """`variables` with each pair's batch norm folded into its layer (math in
  the module docstring), computed in float64; the norms' entries removed."""
  variables = jax.tree.map(np.asarray, dict(variables))
  params, stats = variables['params'], variables.get('batch_stats', {})
  for layer, norm in pairs.items():
    w = _get(params, layer)
    bn, bn_stats = _get(params, norm), _get(stats, norm)
    kernel = w['kernel']
    mean = bn_stats['mean'].astype(np.float64)
    var = bn_stats['var'].astype(np.float64)
    gamma = bn.get('scale', np.ones_like(mean)).astype(np.float64)
    beta = bn.get('bias', np.zeros_like(mean)).astype(np.float64)
    s = gamma / np.sqrt(var + epsilons[norm])
    b = w.get('bias', np.zeros_like(mean)).astype(np.float64)
    params = _set(params, layer, {
        'kernel': (kernel.astype(np.float64) * s).astype(kernel.dtype),
        'bias': (s * (b - mean) + beta).astype(kernel.dtype)})
    params = _set(params, norm, None)
    stats = _set(stats, norm, None)
  out = {**variables, 'params': params}
  if 'batch_stats' in variables:
    out['batch_stats'] = stats
  return out


@dataclasses.dataclass(frozen=True)
class FoldedModel:
  """`model` running with its folded batch norms: `apply(variables, x,
  train=False)` as a flax model's, with `fold_batch_norms`'s variables.
  Inference only."""
  model: nn.Module
  layers: frozenset  # Paths of the layers that gained a folded bias.
  norms: Any  # Batch norm path -> its output dtype (now an identity).

  def _intercept(self, next_fun, args, kwargs, context):
    path = context.module.path
    if context.method_name == '__call__' and path in self.norms:
      x = args[0] if args else kwargs['x']
      return x.astype(self.norms[path])
    out = next_fun(*args, **kwargs)
    if (context.method_name == '__call__' and path in self.layers
        and not context.module.use_bias):
      out = out + context.module.variables['params']['bias'].astype(out.dtype)
    return out

  def apply(self, variables, x, train: bool = False, **kwargs):
    if train:
      raise ValueError('a model with folded batch norms runs in inference '
                       'mode only (train=False)')
    with nn.intercept_methods(self._intercept):
      return self.model.apply(variables, x, train=False, **kwargs)


def fold_batch_norms(model: nn.Module, variables, example):
  """(model, variables) computing `model.apply(variables, x, train=False)`
  with every foldable batch norm folded (`foldable_pairs`): a `FoldedModel`
  and its variables, or the inputs unchanged when nothing folds. `example`:
  an input batch (or a `jax.ShapeDtypeStruct`) for tracing."""
  calls, jaxpr = _calls(model, variables, example)
  pairs = foldable_pairs(calls, jaxpr)
  if not pairs:
    return model, variables
  epsilons = {m.path: m.epsilon for m, _ in calls
              if isinstance(m, nn.BatchNorm)}
  dtypes = {m.path: dtype for m, dtype in calls}
  folded = FoldedModel(model, frozenset(pairs),
                       {norm: dtypes[norm] for norm in pairs.values()})
  return folded, fold_variables(variables, pairs, epsilons)
