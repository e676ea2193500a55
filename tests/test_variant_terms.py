"""Every variant trainer's step evaluates its distillation terms with
`kd.steps.apply_terms`: a scheduled weight takes its value at each step (the
logged loss is made of it), and an adapter's state is carried from step to
step. Tiny MLPs on random data, three steps each, one device."""
import jax
import ml_collections as mc
import numpy as np
import optax
import pytest

from experiments.adversarial import config as adv_config
from experiments.adversarial import discriminator as disc_lib
from experiments.adversarial import train as adv_train
from experiments.multi_teacher import train as mt_train
from experiments.online import train as online_train
from experiments.self_distillation import train as sd_train
from kd import models
from kd import steps
from kd.parallel import DataParallel

STEPS, BATCH, CLASSES = 3, 8, 10
# The weight of 'sched' goes 0 -> 1 linearly over steps 0..2.
WEIGHTS = [0.0, 0.5, 1.0]
SCHED = steps.Term('sched', 'kd', 1.0, num_steps=STEPS - 1, kwargs={
    'temperature': 2.0, 'schedule': {'weight': ('linear', 0.0, 1.0)}})
# OFD's adapter measures the teacher's margin on the first batch and keeps
# it in its state: dropped state stays at the initial +1, re-measured state
# changes with the batch.
OFD = steps.Term('ofd', 'ofd', 0.5, student='embedding', teacher='embedding',
                 adapter='ofd')
TERMS = (SCHED, OFD)
PARALLEL = DataParallel('pmap', 1)
RNG = np.random.default_rng(0)
X = RNG.normal(size=(STEPS, BATCH, 8)).astype(np.float32)
Y = RNG.integers(0, CLASSES, size=(STEPS, BATCH)).astype(np.int32)


def _mlp(width):
  return models.create('mlp', CLASSES, hidden=(width,))


def _run(step, state, *extra, margin=lambda s: s.aux_state['ofd']['margin'],
         parallel=PARALLEL):
  """Three steps; returns the metrics of each and OFD's margin after each."""
  p_state = parallel.replicate(state)
  extra = tuple(parallel.replicate(e) for e in extra)
  metrics, margins = [], []
  for i in range(STEPS):
    p_state, m = step(p_state, *extra, parallel.shard(
        {'image': X[i], 'label': Y[i], 'mask': np.ones(BATCH, np.float32)}))
    metrics.append(jax.tree.map(float, parallel.unreplicate(m)))
    margins.append(np.asarray(margin(parallel.unreplicate(p_state))))
  return metrics, margins


def _check(metrics, margins, rest, *suffixes):
  """The logged weight follows the schedule; the loss is `rest(m)` plus the
  terms' weighted values; OFD's margin was measured at the first step and
  kept."""
  np.testing.assert_allclose([m['sched/weight'] for m in metrics], WEIGHTS,
                             atol=1e-7)
  for m, w in zip(metrics, WEIGHTS):
    terms = sum(w * m[f'sched{s}'] + 0.5 * m[f'ofd{s}'] for s in suffixes)
    assert m['sched' + suffixes[0]] > 0
    np.testing.assert_allclose(m['loss'], rest(m) + terms, rtol=1e-5)
  assert np.all(margins[0] < 0), margins[0]  # Measured (it starts at +1).
  for later in margins[1:]:
    np.testing.assert_array_equal(later, margins[0])


def _state(student, aux_params, aux_state):
  return steps.create_state(student, optax.sgd(0.1), jax.random.key(0),
                            X[0, :1], aux_params, aux_state)


def _adapters(terms, student, teacher):
  shapes = lambda m: steps.outputs(*jax.eval_shape(lambda: m.apply(
      m.init(jax.random.key(0), X[0, :1]), X[0, :1])))
  return steps.init_adapters(terms, shapes(student), shapes(teacher),
                             jax.random.key(1), 0)


def test_multi_teacher_terms_follow_schedules_and_carry_state():
  student, teachers = _mlp(16), (_mlp(24), _mlp(32))
  t_vars = tuple(t.init(jax.random.key(5 + k), X[0, :1])
                 for k, t in enumerate(teachers))
  # 'sched' learns from teacher 1, 'ofd' from teacher 0.
  aux = [_adapters((t,), student, teachers[k]) for t, k in ((SCHED, 1),
                                                           (OFD, 0))]
  state = _state(student, {**aux[0][0], **aux[1][0]},
                 {**aux[0][1], **aux[1][1]})
  step = PARALLEL.wrap(mt_train.make_step(
      student, teachers, optax.sgd(0.1), 'mean', 4.0, 1.0, 1.0,
      terms=TERMS, term_teachers=(1, 0)), 2)
  metrics, margins = _run(step, state, t_vars)
  _check(metrics, margins, lambda m: m['ce'] + m['kd'], '')


def test_adversarial_terms_follow_schedules_and_carry_state():
  c = adv_config.get_config('teacher_dir=unused')
  c.distill.terms = mc.ConfigDict()
  student, teacher = _mlp(16), _mlp(32)
  t_vars = teacher.init(jax.random.key(5), X[0, :1])
  disc = disc_lib.Discriminator((8,))
  state = adv_train.init_state(c, student, teacher, disc, optax.sgd(0.1),
                               optax.adam(1e-3), X[0, :1], CLASSES, TERMS)
  step = PARALLEL.wrap(adv_train.make_step(
      student, teacher, disc, optax.sgd(0.1), optax.adam(1e-3),
      c.adversarial, CLASSES, TERMS), 2)
  metrics, margins = _run(step, state, t_vars,
                          margin=lambda s: s.student.aux_state['ofd'][
                              'margin'])
  a = c.adversarial
  _check(metrics, margins, lambda m: a.ce_weight * m['ce']
         + a.adv_weight * m['adv'], '')


def test_online_terms_follow_schedules_and_carry_state_per_pair_on_both_wrappers():
  students = (_mlp(16), _mlp(16))
  s = mc.ConfigDict(dict(example=X[0, :1], tx=optax.sgd(0.1),
                         num_examples=0))
  state = online_train.init_state(mc.ConfigDict(dict(seed=0)), students, s,
                                  TERMS)
  assert sorted(state.aux_state) == ['student_0_from_1', 'student_1_from_0']
  margin = lambda st: np.stack([st.aux_state[p]['ofd']['margin']
                                for p in sorted(st.aux_state)])
  runs = {}
  for kind in ('pmap', 'mesh'):  # The same per-shard step, two wrappers.
    parallel = DataParallel(kind, 1)
    step = parallel.wrap(online_train.make_step(students, optax.sgd(0.1),
                                                TERMS), 1)
    runs[kind] = _run(step, state, margin=margin, parallel=parallel)
  metrics, margins = runs['pmap']
  _check(metrics, margins, lambda m: m['ce_0'] + m['ce_1'], '_0', '_1')
  for want, got in zip(metrics, runs['mesh'][0]):
    assert sorted(got) == sorted(want)
    np.testing.assert_allclose([got[k] for k in sorted(got)],
                               [want[k] for k in sorted(want)], rtol=1e-6)
  np.testing.assert_allclose(runs['mesh'][1], margins, rtol=1e-6)


@pytest.mark.parametrize('mode', ['byot', 'teacher_free'])
def test_self_distillation_terms_follow_schedules_and_carry_state(mode):
  model = _mlp(16)
  alpha = 0.3
  sd = mc.ConfigDict(dict(mode=mode, taps=('hidden0',), alpha=alpha,
                          correct_prob=0.9))
  terms = TERMS if mode == 'byot' else (SCHED,)  # No teacher embedding.
  c = mc.ConfigDict(dict(seed=0, self_distill=sd))
  v = mc.ConfigDict(dict(example=X[0, :1], tx=optax.sgd(0.1),
                         num_examples=0, num_classes=CLASSES))
  state, heads = sd_train.init_state(c, model, v, terms)
  step = PARALLEL.wrap(sd_train.make_step(model, heads, optax.sgd(0.1), sd,
                                          terms), 1)
  if mode == 'byot':
    metrics, margins = _run(step, state, margin=lambda s: s.aux_state[
        'terms_hidden0']['ofd']['margin'])
    _check(metrics, margins, lambda m: m['ce'] + (1 - alpha) * m[
        'ce_hidden0'], '_hidden0')
    for m in metrics:  # byot: the heads' part of the loss.
      np.testing.assert_allclose(m['byot'], m['loss'] - m['ce'], rtol=1e-5)
    return
  metrics, _ = _run(step, state, margin=lambda s: np.zeros(()))
  np.testing.assert_allclose([m['sched/weight'] for m in metrics], WEIGHTS,
                             atol=1e-7)
  for m, w in zip(metrics, WEIGHTS):
    np.testing.assert_allclose(m['loss'], (1 - alpha) * m['ce']
                               + w * m['sched'], rtol=1e-5)
  # The teacher is the virtual one, 0.9 on the label: the value at step 0
  # is T^2 KL(softmax(p^d / T) || softmax(s / T)) of the initial model.
  logits = model.apply(state_vars(state), X[0])[0]
  p_d = np.where(np.eye(CLASSES)[Y[0]] > 0, 0.9, 0.1 / (CLASSES - 1))
  p = jax.nn.softmax(p_d / 2.0)
  log_q = jax.nn.log_softmax(logits / 2.0)
  want = 4.0 * np.mean(np.sum(p * (np.log(p) - log_q), -1))
  np.testing.assert_allclose(metrics[0]['sched'], want, rtol=1e-5)


def state_vars(state):
  return {'params': state.params, **state.model_state}
