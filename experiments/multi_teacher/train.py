"""Multi-teacher distillation: K frozen teachers in one jitted step.

  python -m experiments.multi_teacher.train \
      --config=experiments/multi_teacher/config.py:mode=mean,seed=0 \
      --workdir=runs/multi_teacher/mean_s0

Loss = ce_weight * CE(student, label) + kd_weight * T^2 KL(target || student),
target = sum_k w_k softmax(t_k / T) with the weights of `config.multi.mode`
(see `weights`), plus any `config.distill.terms` (feature terms such as a
FitNets hint), each paired with teacher `config.multi.term_teachers[name]`
(default 0), with their schedules, warm-up and adapters as in `kd.main`. The test report also has each teacher and the teachers'
ensemble (mean of their T = 1 distributions).
"""
import os

import jax
import jax.numpy as jnp

from experiments.multi_teacher import weights as weights_lib
from kd import losses
from kd import main as kd_main
from kd import runs
from kd import steps
from kd import train as kd_train
from kd import variant
from kd.parallel import AXIS


def teacher_weights(mode: str, teacher_logits, student_logits, labels,
                    temperature: float, fixed=()):
  """[K, B] weights of `mode`; pmean makes AE-KD's solve global."""
  if mode == 'mean':
    return weights_lib.mean(teacher_logits)
  if mode == 'fixed':
    return weights_lib.fixed(teacher_logits, fixed)
  if mode == 'confidence':
    return weights_lib.confidence(teacher_logits, labels)
  if mode == 'entropy':
    return weights_lib.entropy(teacher_logits)
  if mode == 'ae_kd':
    return weights_lib.ae_kd(student_logits, teacher_logits, temperature,
                             lambda g: jax.lax.pmean(g, AXIS))
  raise ValueError(f'unknown mode {mode!r}; valid: {weights_lib.MODES}')


def make_step(student, teachers, tx, mode: str, temperature: float,
              ce_weight: float, kd_weight: float, fixed=(), terms=(),
              term_teachers=(), seed: int = 0):
  """`step(state, teacher_vars, batch)`, teacher_vars a tuple, one per
  teacher. Teachers run in inference mode with no gradient. `terms`
  (`kd.steps.Term`s, e.g. a FitNets hint) each pair the student with teacher
  `term_teachers[i]`, evaluated by `kd.steps.apply_terms` (schedules,
  warm-up, adapters and their state)."""
  by_teacher = [tuple(t for t, j in zip(terms, term_teachers) if j == k)
                for k in range(len(teachers))]

  def loss_fn(trainable, state, teacher_outs, batch, rng):
    params, aux_params = trainable
    logits, feats, new_model_state = steps.apply_train(
        student, params, state.model_state, batch['image'])
    teacher_logits = jnp.stack([o['logits'] for o in teacher_outs])
    w = jax.lax.stop_gradient(teacher_weights(
        mode, teacher_logits, jax.lax.stop_gradient(logits), batch['label'],
        temperature, fixed))
    target = weights_lib.combine(w, teacher_logits, temperature)
    ce = steps.label_loss(logits, batch)
    kd = losses.masked_mean(weights_lib.kd_to_target(logits, target,
                                                     temperature),
                            batch.get('mask'))
    total = ce_weight * ce + kd_weight * kd
    metrics = {'ce': ce, 'kd': kd,
               'accuracy': steps.accuracy(logits, batch['label'],
                                          batch.get('mask'))}
    metrics.update({f'weight_{k}': jnp.mean(w[k]) for k in range(w.shape[0])})
    student_out = steps.outputs(logits, feats)
    new_aux_state = {}
    for k, group in enumerate(by_teacher):
      if group:
        value, more, aux_state = steps.apply_terms(
            group, student_out, teacher_outs[k], batch, state.step,
            aux_params, state.aux_state, jax.random.fold_in(rng, k))
        total = total + value
        metrics.update(more)
        new_aux_state.update(aux_state)
    metrics['loss'] = total
    return total, (new_model_state, new_aux_state, metrics)

  def step(state, teacher_vars, batch):
    teacher_outs = jax.lax.stop_gradient(tuple(
        steps.outputs(*t.apply(v, batch['image'], train=False))
        for t, v in zip(teachers, teacher_vars)))
    return steps.update(state, tx, loss_fn, state, teacher_outs, batch,
                        steps.step_rng(seed, state))

  return step


def ensemble_logits(teachers, teacher_vars, x):
  """{'teacher_k': logits, 'ensemble': log of the mean distribution}."""
  out = {f'teacher_{k}': t.apply(v, x, train=False)[0]
         for k, (t, v) in enumerate(zip(teachers, teacher_vars))}
  return {**out, 'ensemble': steps.ensemble(out.values())}


def train(config, workdir: str) -> dict:
  m = config.multi
  s = variant.setup(config, 'multi_teacher')
  student, example = variant.create_model(s, config.model), s.example
  for d in m.teachers:
    runs.check_teacher(d, config.distill.teacher.allow_unfinished_teacher)
  loaded = [runs.load_run(d)[1:3] for d in m.teachers]
  teachers = tuple(t for t, _ in loaded)
  teacher_vars = tuple(v for _, v in loaded)
  terms = kd_train.distill_terms(config)
  term_teachers = tuple(int(m.term_teachers.get(t.name, 0)) for t in terms)
  variant.check_term_names(terms, ('accuracy', 'ce', 'kd', 'loss') + tuple(
      f'weight_{k}' for k in range(len(teachers))), 'multi_teacher')
  aux_params, aux_state = {}, {}
  for i, (term, k) in enumerate(zip(terms, term_teachers)):
    if not 0 <= k < len(teachers):
      raise ValueError(f'distill term {term.name!r} asks for teacher {k}; '
                       f'there are {len(teachers)} teachers (0-based index '
                       'in config.multi.term_teachers)')
    kd_train.check_terms((term,), student, teachers[k], example)
    params, state = kd_train.init_adapters(
        (term,), student, teachers[k], example,
        jax.random.fold_in(jax.random.key(config.seed + 1), i),
        s.num_examples)
    aux_params.update(params)
    aux_state.update(state)
  state = steps.create_state(student, s.tx, jax.random.key(config.seed),
                             example, aux_params, aux_state)
  train_step = s.parallel.wrap(
      make_step(student, teachers, s.tx, m.mode, m.temperature, m.ce_weight,
                m.kd_weight, tuple(m.weights), terms, term_teachers,
                config.seed),
      num_replicated=2)
  p_teachers = s.parallel.replicate(teacher_vars)

  eval_student = s.parallel.wrap(steps.make_named_eval_step(
      lambda v, x: {'student': student.apply(v, x, train=False)[0]}), 1,
                                 donate_first=False)
  eval_teachers = s.parallel.wrap(steps.make_named_eval_step(
      lambda tv, x: ensemble_logits(teachers, tv, x)), 1, donate_first=False)
  summary = variant.train_and_test(
      config, workdir, f'multi_teacher/{m.mode}', s, state, train_step,
      (p_teachers,), eval_student,
      lambda p: ({'params': p.params, **p.model_state},))
  if 'ensemble/test_accuracy' not in summary:
    summary.update(variant.named_test_rates(config, s.parallel, eval_teachers,
                                            (p_teachers,)))
    summary['teachers'] = list(m.teachers)
    runs.write_json(os.path.join(workdir, 'summary.json'), summary)
  return summary


if __name__ == '__main__':
  kd_main.run_variant(train)
