"""Self-distillation: one model is its own teacher, in one jitted step.

  python -m experiments.self_distillation.train \
      --config=experiments/self_distillation/config.py:mode=teacher_free,seed=0 \
      --workdir=runs/self_distillation/tf_s0

The distillation is `config.distill.terms` (`kd.steps.apply_terms`:
schedules, warm-up and adapters as in `kd.main`), with a teacher that is
the model itself:

byot (Be Your Own Teacher, Zhang et al., ICCV 2019): an auxiliary
classifier on each tapped intermediate feature (global average pool, a
bottleneck Dense to the final embedding's width, then a linear classifier)
is a student of the final classifier, stop-gradient: for each head i,
  (1 - alpha) CE(q_i, y) + sum_k w_k L_k(head i, final),
by default alpha T^2 KL(q_C^T || q_i^T) ('kd') + feature_weight
mean (F_i - F_C)^2 ('hint' on the embeddings); loss = CE(final) + the sum
over heads (logged as `byot`). The auxiliary heads train with the model
(`TrainState.aux_params['heads']`; a term's adapter per head under
'terms_<tap>'). The test report has the final classifier, each auxiliary
one, and their ensemble.

teacher_free (Tf-KD_reg, Yuan et al., CVPR 2020): the teacher is the
hand-designed `losses.virtual_teacher` p^d, taken as logits as in the
authors' code: loss = (1 - alpha) CE(s, y) + sum_k w_k L_k(s, p^d), by
default alpha T^2 KL(softmax(p^d / T) || softmax(s / T)).
"""
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from experiments.self_distillation import losses as sd_losses
from kd import main as kd_main
from kd import steps
from kd import train as kd_train
from kd import variant


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


def make_step(model, heads, tx, s, terms, seed: int = 0):
  """`step(state, batch)`; `s` is `config.self_distill`, `terms` the
  distillation terms (`kd.steps.Term`)."""

  def loss_fn(trainable, state, batch, rng):
    params, aux = trainable
    logits, feats, new_model_state = steps.apply_train(
        model, params, state.model_state, batch['image'])
    labels = batch['label']
    ce = steps.label_loss(logits, batch)
    metrics = {'ce': ce, 'accuracy': steps.accuracy(logits, labels,
                                                    batch.get('mask'))}
    if s.mode == 'byot':
      teacher_out = jax.lax.stop_gradient(steps.outputs(logits, feats))
      students = [(f'terms_{tap}', f'_{tap}', {'logits': l, 'embedding': e})
                  for tap, (l, e) in zip(s.taps, heads.apply(
                      {'params': aux['heads']}, feats))]
      total = sd = ce
    else:
      teacher_out = {'logits': sd_losses.virtual_teacher(
          logits.shape[-1], labels, s.correct_prob)}
      students = [('terms', '', steps.outputs(logits, feats))]
      total = 0.0
    new_aux_state = {}
    for k, (key, suffix, student_out) in enumerate(students):
      head_ce = steps.label_loss(student_out['logits'], batch)
      distill, more, new_aux_state[key] = steps.apply_terms(
          terms, student_out, teacher_out, batch, state.step, aux.get(key),
          state.aux_state.get(key), jax.random.fold_in(rng, k))
      total = total + (1 - s.alpha) * head_ce + distill
      metrics.update({name if name.endswith('/weight') else name + suffix: v
                      for name, v in more.items()})
      if suffix:
        metrics[f'ce{suffix}'] = head_ce
        metrics[f'accuracy{suffix}'] = steps.accuracy(
            student_out['logits'], labels, batch.get('mask'))
    if s.mode == 'byot':
      metrics['byot'] = total - sd
    metrics['loss'] = total
    new_aux_state = {k: v for k, v in new_aux_state.items() if v}
    return total, (new_model_state, new_aux_state, metrics)

  def step(state, batch):
    return steps.update(state, tx, loss_fn, state, batch,
                        steps.step_rng(seed, state))

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


def init_state(config, model, v, terms):
  """(state, heads): the model's state with the auxiliary heads (byot) and
  the adapters of `terms`, each head's (byot) or the model's own."""
  s = config.self_distill
  rng, example = jax.random.key(config.seed), v.example
  variant.check_term_names(terms, ('accuracy', 'byot', 'ce', 'loss', 'terms'),
                           'self_distillation')
  out = steps.outputs(*jax.eval_shape(lambda: model.init_with_output(
      rng, example, train=False)[0]))
  heads, aux, aux_state = None, {}, {}
  if s.mode == 'byot':
    missing = [t for t in s.taps if t not in out]
    if missing or not s.taps:
      raise ValueError(f'byot taps {list(s.taps)}: {missing or "none"} not '
                       'among the model features '
                       f'{sorted(set(out) - {"logits"})}')
    heads = AuxHeads(tuple(s.taps), out['embedding'].shape[-1],
                     v.num_classes)
    head_in = {t: jnp.zeros(out[t].shape, out[t].dtype) for t in s.taps}
    aux = {'heads': heads.init(jax.random.fold_in(rng, 1), head_in)['params']}
    head_outs = jax.eval_shape(lambda: heads.apply({'params': aux['heads']},
                                                   head_in))
    students = {f'terms_{tap}': {'logits': l, 'embedding': e}
                for tap, (l, e) in zip(s.taps, head_outs)}
    teacher = out
  else:
    students, teacher = {'terms': out}, {'logits': out['logits']}
  for k, (key, student_out) in enumerate(students.items()):
    steps.check_terms(terms, student_out, teacher)
    p, st = steps.init_adapters(
        terms, student_out, teacher,
        jax.random.fold_in(jax.random.key(config.seed + 1), k), v.num_examples)
    if p:
      aux[key] = p
    if st:
      aux_state[key] = st
  return steps.create_state(model, v.tx, rng, example, aux, aux_state), heads


def train(config, workdir: str) -> dict:
  s = config.self_distill
  v = variant.setup(config, 'self_distillation')
  model = variant.create_model(v, config.model)
  terms = kd_train.distill_terms(config)
  state, heads = init_state(config, model, v, terms)
  train_step = v.parallel.wrap(make_step(model, heads, v.tx, s, terms,
                                         config.seed), 1)
  eval_fn = v.parallel.wrap(steps.make_named_eval_step(
      lambda st, x: predictions(model, heads, s.taps,
                                {'params': st.params, **st.model_state},
                                st.aux_params, x)), 1, donate_first=False)
  return variant.train_and_test(
      config, workdir, f'self_distillation/{s.mode}', v, state, train_step, (),
      eval_fn, lambda p_state: (p_state,))


if __name__ == '__main__':
  kd_main.run_variant(train)
