"""Prune a trained model into a smaller one of the same kind, then distil
(Minitron: Muralidharan et al. 2024; Sreenivas et al. 2024).

  python -m kd.prune --workdir=TEACHER_RUN --out=RUN \\
      --width=heads:0.5,mlp:0.5,embed:0.75 --depth=keep:2,by:cosine

scores every head, MLP neuron, embedding channel and layer from activations
on `--calibration_batches` training batches (`kd.prune.transformer`; the
encoder and the ViT/DeiT alike; the CNNs' conv channels and dense units
by activation or filter L1 norm, `--width=channels:0.5,dense:0.5,by:
activation|l1`: `kd.prune.conv`), keeps
the most important and writes RUN: a kd run directory (config.json with the
pruned model's kwargs, checkpoints/0, importance.json, summary.json with
the pruned model's test figures and its provenance: teacher, step,
calibration data). `config.init_from=RUN` starts a student from it; a
pipeline stage with `prune.source` set is such a run (configs/lm/
prune_distill.py). Widths are fractions (0.5) or sizes (64); units left out
keep their size.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from kd import models
from kd.prune import conv
from kd.prune import targets
from kd.prune import transformer

MODELS = (*transformer.FAMILIES, *conv.MODELS)
# For errors: the ViTs' registry names last, as one group.
MODELS_TEXT = (', '.join(n for n in MODELS if n not in transformer.VITS) +
               f' and the ViTs ({", ".join(transformer.VITS)})')


class Pruned(NamedTuple):
  kwargs: dict  # The pruned model's.
  variables: dict
  scores: transformer.Scores | conv.Scores  # .to_json(): importance.json.
  layers: list[int]  # The teacher's layers kept, in order.


def check_model(name: str) -> None:
  if name not in MODELS:
    raise ValueError(f'kd.prune prunes {MODELS_TEXT}; the run holds a '
                     f'{name!r}')


def pruned_kwargs(name: str, kwargs: dict, width: str = '',
                  depth: str = '') -> dict:
  """The kwargs of `name`(`kwargs`) pruned to `width` and `depth` (the
  flags' text): what a config sets for the student that `init_from` a
  pruned run."""
  check_model(name)
  if name in conv.MODELS:
    return conv.pruned_kwargs(name, dict(kwargs), width, depth)
  return transformer.pruned_kwargs(dict(kwargs), targets.width(width),
                                   targets.depth(depth), name)


def prune(name: str, kwargs: dict, num_classes: int, variables: dict,
          batches, width: str = '', depth: str = '',
          held_out=None) -> Pruned:
  """`variables` of model `name`(`kwargs`) pruned to `width` and `depth`,
  scored on `batches` (a re-iterable of kd batches: 'image', 'label',
  optional 'mask'): depth first, then width scored on the shallower
  model. `held_out` (default `batches`): the batches whose loss increase
  ranks layers by 'loss'."""
  check_model(name)
  kwargs = dict(kwargs)
  if name in conv.MODELS:
    new_kwargs, params, scores = conv.prune(name, kwargs, num_classes,
                                            variables, batches, width, depth)
    return Pruned(new_kwargs, {'params': jax.tree.map(jnp.asarray, params)},
                  scores, list(range(len(scores.channels))))
  w, d = targets.width(width), targets.depth(depth)
  new_kwargs = transformer.pruned_kwargs(kwargs, w, d, name)
  s = transformer.sizes(kwargs, name)
  model = models.create(name, num_classes, **kwargs)
  layers_by, layer_imp = '', None
  layers = list(range(s.num_layers))
  if d.keep is not None and d.keep < s.num_layers:
    layer_imp = transformer.layer_scores(
        model, variables, held_out if d.by == 'loss' and held_out else
        batches, s.num_layers, d.by, name)
    layers_by = d.by
    layers = sorted(np.argsort(-layer_imp, kind='stable')[:d.keep].tolist())
  shallow = transformer.resized(kwargs, s, s._replace(num_layers=len(
      layers)), name)
  shallow_vars = {'params': transformer.slice_params(
      variables['params'], _all_units(s, layers), layers, name, s)}
  scores = transformer.width_scores(
      models.create(name, num_classes, **shallow), shallow_vars,
      batches, name) if w else _no_scores(s, layers)
  scores.layers, scores.layers_by = layer_imp, layers_by
  # The shallow model's layer i is the teacher's layers[i].
  scores.heads = {layers[i]: v for i, v in scores.heads.items()}
  scores.mlp = {layers[i]: v for i, v in scores.mlp.items()}
  p = transformer.target_sizes(kwargs, w, d, name)
  kept = transformer.kept_units(scores, s, p, layers)
  params = transformer.slice_params(variables['params'], kept, layers, name, s)
  return Pruned(new_kwargs, {'params': jax.tree.map(jnp.asarray, params)},
                scores, layers)


def _all_units(s: transformer.Sizes, layers) -> dict:
  kept = {('embed', -1): np.arange(s.d_model),
          ('pooler', -1): np.arange(s.d_model)}
  for l in layers:
    kept.update({('heads', l): np.arange(s.num_heads),
                 ('kv', l): np.arange(s.kv_heads),
                 ('mlp', l): np.arange(s.mlp_hidden)})
  return kept


def _no_scores(s: transformer.Sizes, layers) -> transformer.Scores:
  """Scores that keep every unit (no width target)."""
  return transformer.Scores(
      {i: np.ones(s.num_heads) for i in range(len(layers))},
      {i: np.ones(s.mlp_hidden) for i in range(len(layers))}, None)
