"""Deep mutual learning (Zhang et al., CVPR 2018): N students, one step.

  python -m experiments.online.train \
      --config=experiments/online/config.py:students=mlp+mlp,seed=0 \
      --workdir=runs/online/mlp+mlp_s0

Student i minimises CE(p_i, label) + mutual_weight * mutual_kl_i (see
`mutual`), against its peers' predictions of the same batch at the same
step. One optimizer state covers every student's parameters; Adam is
per-parameter, so this is the same as one optimizer each. The test report
has every student and their ensemble (mean of their distributions).
"""

import jax
import jax.numpy as jnp

from experiments.online import mutual
from kd import main as kd_main
from kd import losses
from kd import steps
from kd import variant
from kd.parallel import AXIS


def make_step(students, tx, temperature: float, mutual_weight: float):
  """`step(state, batch)`; state.params and state.model_state are tuples,
  one entry per student."""

  def loss_fn(params, model_state, batch):
    outs = [steps.apply_train(m, p, s, batch['image'])
            for m, p, s in zip(students, params, model_state)]
    logits = jnp.stack([l.astype(jnp.float32) for l, _, _ in outs])
    ce = jnp.stack([losses.cross_entropy(l, batch['label']) for l in logits])
    kl = mutual.mutual_kl(logits, temperature)
    metrics = {'loss': jnp.sum(ce + mutual_weight * kl)}
    for i in range(len(students)):
      metrics.update({f'ce_{i}': ce[i], f'mutual_{i}': kl[i],
                      f'accuracy_{i}': steps.accuracy(logits[i],
                                                       batch['label'])})
    return metrics['loss'], (tuple(s for _, _, s in outs), metrics)

  def step(state, batch):
    grads, (new_model_state, metrics) = jax.grad(loss_fn, has_aux=True)(
        state.params, state.model_state, batch)
    return (steps.apply_gradients(state, tx, (grads, {}), new_model_state),
            jax.lax.pmean(metrics, AXIS))

  return step


def predictions(students, variables, x):
  """{'student_i': logits, 'ensemble': log of the mean distribution}."""
  out = {f'student_{i}': m.apply(v, x, train=False)[0]
         for i, (m, v) in enumerate(zip(students, variables))}
  return {**out, 'ensemble': steps.ensemble(out.values())}


def train(config, workdir: str) -> dict:
  o = config.online
  s = variant.setup(config, 'online')
  students = tuple(variant.create_model(s, m)
                   for _, m in sorted(o.students.items()))
  params, model_state = [], []
  for i, m in enumerate(students):
    v = dict(m.init(jax.random.fold_in(jax.random.key(config.seed), i),
                    s.example, train=False))
    params.append(v.pop('params'))
    model_state.append(v)
  params, model_state = tuple(params), tuple(model_state)
  state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                           model_state=model_state,
                           opt_state=s.tx.init((params, {})))
  train_step = s.parallel.wrap(make_step(students, s.tx, o.temperature,
                                         o.mutual_weight), num_replicated=1)
  eval_fn = s.parallel.wrap(steps.make_named_eval_step(
      lambda v, x: predictions(students, v, x)), 1, donate_first=False)
  return variant.fit(config, workdir, 'online', s, state, train_step, (),
                     eval_fn, lambda p: (tuple(
                         {'params': ps, **ms}
                         for ps, ms in zip(p.params, p.model_state)),))


if __name__ == '__main__':
  kd_main.run_variant(train)
