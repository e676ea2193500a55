"""Self-distillation: one model is its own teacher, in one jitted step.

  python -m experiments.self_distillation.train \
      --config=experiments/self_distillation/config.py:mode=teacher_free,seed=0 \
      --workdir=runs/self_distillation/tf_s0

byot (Zhang et al., ICCV 2019): an auxiliary classifier on each tapped
intermediate feature (global average pool, a bottleneck Dense to the final
embedding's width, then a linear classifier), trained with the final
classifier's softened output and embedding as targets (`losses.byot`);
loss = CE(final) + byot. The auxiliary heads train with the model
(`TrainState.aux_params`). The test report has the final classifier, each
auxiliary one, and their ensemble.

teacher_free (Yuan et al., CVPR 2020): Tf-KD_reg, the hand-designed virtual
teacher of `losses.teacher_free` instead of a network.
"""
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from experiments.self_distillation import losses as sd_losses
from kd import data
from kd import evaluate
from kd import loop
from kd import main as kd_main
from kd import losses
from kd import models
from kd import optim
from kd import steps
from kd.parallel import AXIS, DataParallel


class AuxHead(nn.Module):
  """Pooled feature -> (logits, embedding of the final classifier's width)."""
  width: int
  num_classes: int

  @nn.compact
  def __call__(self, feature):
    x = feature.astype(jnp.float32)
    x = jnp.mean(x, axis=tuple(range(1, x.ndim - 1))) if x.ndim > 2 else x
    emb = nn.relu(nn.Dense(self.width, name='bottleneck')(x))
    return nn.Dense(self.num_classes, name='fc')(emb), emb


class AuxHeads(nn.Module):
  taps: Sequence[str]
  width: int
  num_classes: int

  @nn.compact
  def __call__(self, feats):
    return tuple(AuxHead(self.width, self.num_classes, name=t)(feats[t])
                 for t in self.taps)


def make_step(model, heads, tx, s):
  """`step(state, batch)`; `s` is `config.self_distill`."""

  def loss_fn(trainable, state, batch):
    params, aux = trainable
    logits, feats, new_model_state = steps.apply_train(
        model, params, state.model_state, batch['image'])
    labels = batch['label']
    metrics = {'accuracy': steps.accuracy(logits, labels)}
    if s.mode == 'byot':
      outs = heads.apply({'params': aux['heads']}, feats)
      ce = losses.cross_entropy(logits, labels)
      sd = sd_losses.byot([l for l, _ in outs], [e for _, e in outs], logits,
                          feats['embedding'], labels, s.alpha, s.temperature,
                          s.feature_weight)
      total = ce + sd
      metrics.update(ce=ce, byot=sd)
      for tap, (l, _) in zip(s.taps, outs):
        metrics[f'accuracy_{tap}'] = steps.accuracy(l, labels)
    else:
      total = sd_losses.teacher_free(logits, labels, s.alpha, s.temperature,
                                     s.correct_prob)
      metrics['ce'] = losses.cross_entropy(logits, labels)
    metrics['loss'] = total
    return total, (new_model_state, metrics)

  def step(state, batch):
    grads, (new_model_state, metrics) = jax.grad(loss_fn, has_aux=True)(
        (state.params, state.aux_params), state, batch)
    return (steps.apply_gradients(state, tx, grads, new_model_state),
            jax.lax.pmean(metrics, AXIS))

  return step


def predictions(model, heads, taps, variables, aux, x):
  """{'final', 'aux_<tap>'..., 'ensemble'} logits (byot), or {'final'}."""
  logits, feats = model.apply(variables, x, train=False)
  out = {'final': logits}
  if heads is not None:
    for tap, (l, _) in zip(taps, heads.apply({'params': aux['heads']}, feats)):
      out[f'aux_{tap}'] = l
    out['ensemble'] = steps.ensemble(list(out.values()))
  return out


def train(config, workdir: str) -> dict:
  s = config.self_distill
  spec = data.spec(config.data.name)
  parallel = DataParallel(config.parallel)
  model = models.create(config.model.name, spec.num_classes,
                        **config.model.kwargs.to_dict())
  example = np.zeros((1, *spec.input_shape), np.float32)
  rng = jax.random.key(config.seed)
  heads, aux = None, {}
  if s.mode == 'byot':
    feats = jax.eval_shape(lambda: model.init_with_output(
        rng, example, train=False)[0][1])
    missing = [t for t in s.taps if t not in feats]
    if missing or not s.taps:
      raise ValueError(f'byot taps {list(s.taps)}: {missing or "none"} not '
                       f'among the model features {sorted(feats)}')
    heads = AuxHeads(tuple(s.taps), feats['embedding'].shape[-1],
                     spec.num_classes)
    aux = {'heads': heads.init(jax.random.fold_in(rng, 1), {
        t: jnp.zeros(feats[t].shape, feats[t].dtype) for t in s.taps})[
            'params']}
  tx, _ = optim.create(config.optimizer, config.steps)
  state = steps.create_state(model, tx, rng, example, aux)
  train_step = parallel.wrap(make_step(model, heads, tx, s), 1)
  eval_fn = parallel.wrap(steps.make_named_eval_step(
      lambda st, x: predictions(model, heads, s.taps,
                                {'params': st.params, **st.model_state},
                                st.aux_params, x)), 1, donate_first=False)
  test = lambda p_state: evaluate.test_named(config, parallel, eval_fn,
                                             (p_state,))
  return loop.fit(config, workdir, f'self_distillation/{s.mode}', parallel,
                  state, train_step, (), test)


if __name__ == '__main__':
  kd_main.run_variant(train)
