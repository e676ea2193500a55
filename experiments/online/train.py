"""Deep mutual learning (Zhang et al., CVPR 2018): N students, one step.

  python -m experiments.online.train \
      --config=experiments/online/config.py:students=mlp+mlp,seed=0 \
      --workdir=runs/online/mlp+mlp_s0

Student i minimises CE(p_i, label) + 1/(N-1) sum_{j != i} sum_k w_k
L_k(i, j), the terms L_k of `config.distill.terms` with student i as the
student and its peer j, stop-gradient, as the teacher, at the same step on
the same batch; the default term `mutual` is T^2 KL(p_j || p_i) with weight
`mutual_weight` (the paper's). Terms take schedules, warm-up and adapters as
in `kd.main`; an adapter has its own parameters and state per ordered pair
(aux key 'student_i_from_j'). One optimizer state covers every student's
parameters; Adam is per-parameter, so this is the same as one optimizer
each. The test report has every student and their ensemble (mean of their
distributions).
"""

import jax
import jax.numpy as jnp

from kd import main as kd_main
from kd import steps
from kd import train as kd_train
from kd import variant


def pair(i: int, j: int) -> str:
  """The aux key of student i's terms against peer j."""
  return f'student_{i}_from_{j}'


def make_step(students, tx, terms, seed: int = 0):
  """`step(state, batch)`; state.params and state.model_state are tuples,
  one entry per student; state.aux_params and aux_state hold the terms'
  adapters per ordered pair (`pair`)."""
  n = len(students)
  if n < 2:
    raise ValueError('mutual learning needs at least 2 students')

  def loss_fn(trainable, state, batch, rng):
    params, aux_params = trainable
    outs = [steps.apply_train(m, p, s, batch['image'])
            for m, p, s in zip(students, params, state.model_state)]
    metrics, new_aux_state, total = {}, {}, 0.0
    for i, (logits, feats, _) in enumerate(outs):
      ce = steps.label_loss(logits, batch)
      student_out = steps.outputs(logits, feats)
      distill, values = 0.0, {}
      for j, (peer_logits, peer_feats, _) in enumerate(outs):
        if j == i:
          continue
        value, more, new_aux_state[pair(i, j)] = steps.apply_terms(
            terms, student_out, jax.lax.stop_gradient(
                steps.outputs(peer_logits, peer_feats)), batch, state.step,
            aux_params.get(pair(i, j)), state.aux_state.get(pair(i, j)),
            jax.random.fold_in(rng, i * n + j))
        distill = distill + value / (n - 1)
        for name, v in more.items():
          values[name] = values.get(name, 0.0) + v / (n - 1)
      total = total + ce + distill
      metrics.update({f'ce_{i}': ce, f'accuracy_{i}': steps.accuracy(
          logits, batch['label'], batch.get('mask'))})
      for name, v in values.items():  # A weight is the same for every i.
        metrics[name if name.endswith('/weight') else f'{name}_{i}'] = v
    metrics['loss'] = total
    new_aux_state = {k: v for k, v in new_aux_state.items() if v}
    return total, (tuple(s for _, _, s in outs), new_aux_state, metrics)

  def step(state, batch):
    return steps.update(state, tx, loss_fn, state, batch,
                        steps.step_rng(seed, state))

  return step


def init_state(config, students, s, terms) -> steps.TrainState:
  """Every student's initialisation (seed folded with its index) and the
  adapters of `terms` for every ordered pair."""
  params, model_state, shapes = [], [], []
  for i, m in enumerate(students):
    v = dict(m.init(jax.random.fold_in(jax.random.key(config.seed), i),
                    s.example, train=False))
    params.append(v.pop('params'))
    model_state.append(v)
    shapes.append(steps.outputs(*jax.eval_shape(
        lambda m=m, v=v, p=params[-1]: m.apply({'params': p, **v}, s.example,
                                               train=False))))
  variant.check_term_names(terms, ('accuracy', 'ce', 'loss'), 'online')
  aux_params, aux_state = {}, {}
  for i, s_shapes in enumerate(shapes):
    for j, t_shapes in enumerate(shapes):
      if i != j:
        steps.check_terms(terms, s_shapes, t_shapes)
        p, st = steps.init_adapters(
            terms, s_shapes, t_shapes, jax.random.fold_in(
                jax.random.key(config.seed + 1), i * len(shapes) + j),
            s.num_examples)
        if p:
          aux_params[pair(i, j)] = p
        if st:
          aux_state[pair(i, j)] = st
  params, model_state = tuple(params), tuple(model_state)
  return steps.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          model_state=model_state,
                          opt_state=s.tx.init((params, aux_params)),
                          aux_params=aux_params, aux_state=aux_state)


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
  terms = kd_train.distill_terms(config)
  state = init_state(config, students, s, terms)
  train_step = s.parallel.wrap(make_step(students, s.tx, terms, config.seed),
                               num_replicated=1)
  eval_fn = s.parallel.wrap(steps.make_named_eval_step(
      lambda v, x: predictions(students, v, x)), 1, donate_first=False)
  return variant.train_and_test(
      config, workdir, 'online', s, state, train_step, (), eval_fn,
      lambda p: (tuple({'params': ps, **ms}
                       for ps, ms in zip(p.params, p.model_state)),))


if __name__ == '__main__':
  kd_main.run_variant(train)
