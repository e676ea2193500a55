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

from experiments.self_distillation import losses as sd_losses
from kd import main as kd_main
from kd import losses
from kd import steps
from kd import variant
from kd.parallel import AXIS


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
  v = variant.setup(config, 'self_distillation')
  model, example = variant.create_model(v, config.model), v.example
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
                     v.num_classes)
    aux = {'heads': heads.init(jax.random.fold_in(rng, 1), {
        t: jnp.zeros(feats[t].shape, feats[t].dtype) for t in s.taps})[
            'params']}
  state = steps.create_state(model, v.tx, rng, example, aux)
  train_step = v.parallel.wrap(make_step(model, heads, v.tx, s), 1)
  eval_fn = v.parallel.wrap(steps.make_named_eval_step(
      lambda st, x: predictions(model, heads, s.taps,
                                {'params': st.params, **st.model_state},
                                st.aux_params, x)), 1, donate_first=False)
  return variant.fit(config, workdir, f'self_distillation/{s.mode}', v, state,
                     train_step, (), eval_fn, lambda p_state: (p_state,))


if __name__ == '__main__':
  kd_main.run_variant(train)
