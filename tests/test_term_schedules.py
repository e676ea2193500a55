"""Schedules of a distillation term's weight and loss arguments."""
import math

import jax
import numpy as np
import optax
import pytest

from kd import config as kd_config
from kd import models
from kd import steps
from kd.parallel import DataParallel

STEPS, BATCH = 3, 8


def test_schedule_values_follow_the_formulas():
  n = 10
  for step, frac in ((0, 0.0), (5, 0.5), (10, 1.0), (20, 1.0)):
    lin = steps.scheduled(('linear', 0.1, 0.9), step, n)
    cos = steps.scheduled(('cosine', 4.0, 1.0), step, n)
    np.testing.assert_allclose(lin, 0.1 + 0.8 * frac, rtol=1e-6)
    np.testing.assert_allclose(
        cos, 1.0 + 3.0 * 0.5 * (1 + math.cos(math.pi * frac)), rtol=1e-6)
  assert steps.scheduled(('constant', 2.5), 7, n) == 2.5
  # A fourth entry ends the schedule early.
  np.testing.assert_allclose(steps.scheduled(('linear', 0., 1., 4), 2, n), 0.5)
  term = steps.Term('kd', 'kd', 9.0, num_steps=n, kwargs={
      'schedule': {'weight': ('linear', 0.0, 2.0)}, 'warmup_steps': 2})
  # The scheduled weight replaces `weight`; warm-up multiplies it.
  np.testing.assert_allclose(term.weight_at(0), 0.0)
  np.testing.assert_allclose(term.weight_at(5), 1.0)
  np.testing.assert_allclose(term.at('temperature', 5, 4.0), 4.0)


def test_validate_rejects_bad_schedules():
  c = kd_config.run_config()
  c.distill.terms.kl = kd_config.term('kd', schedule={
      'temperature': ('cosine', 4.0, 0.0)})
  with pytest.raises(ValueError, match=r'schedule\.temperature.*must be '
                     'positive'):
    kd_config.validate(c, 1)
  c.distill.terms.kl = kd_config.term('generalized_jsd', schedule={
      'beta': ('linear', 0.1, 1.0)})
  with pytest.raises(ValueError, match=r'schedule\.beta.*\(0, 1\)'):
    kd_config.validate(c, 1)
  c.distill.terms.kl = kd_config.term('kd', schedule={'weight': ('step', 1)})
  with pytest.raises(ValueError, match='unknown schedule'):
    kd_config.validate(c, 1)
  c.distill.terms.kl = kd_config.term('kd', schedule={
      'weight': ('linear', 0.0, 1.0), 'beta': ('constant', 0.5)})
  kd_config.validate(c, 1)


def _losses_and_metrics(terms):
  parallel = DataParallel('pmap', 1)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(STEPS, BATCH, 8)).astype(np.float32)
  y = rng.integers(0, 10, size=(STEPS, BATCH)).astype(np.int32)
  student = models.create('mlp', 10, hidden=(16,))
  teacher = models.create('mlp', 10, hidden=(32,))
  tx = optax.sgd(0.1)
  teacher_vars = teacher.init(jax.random.key(1), x[0, :1])
  state = steps.create_state(student, tx, jax.random.key(0), x[0, :1])
  step = parallel.wrap(steps.make_distill_step(student, teacher, tx, terms,
                                               ce_weight=0.5), 2)
  p_state, extra = parallel.replicate(state), parallel.replicate(teacher_vars)
  out = []
  for i in range(STEPS):
    p_state, metrics = step(p_state, extra,
                            parallel.shard({'image': x[i], 'label': y[i]}))
    out.append(jax.tree.map(float, parallel.unreplicate(metrics)))
  return out


def test_step_logs_scheduled_weight_and_constant_matches_none():
  n = STEPS - 1
  scheduled = _losses_and_metrics((
      steps.Term('kl', 'generalized_jsd', 1.0, num_steps=n, kwargs={
          'schedule': {'weight': ('linear', 0.5, 1.5),
                       'temperature': ('cosine', 4.0, 1.0),
                       'beta': ('linear', 0.1, 0.9)}}),))
  np.testing.assert_allclose([m['kl/weight'] for m in scheduled],
                             [0.5, 1.0, 1.5], rtol=1e-6)
  for m in scheduled:
    np.testing.assert_allclose(m['loss'], 0.5 * m['ce'] + m['kl/weight']
                               * m['kl'], rtol=1e-5)
  plain = _losses_and_metrics((steps.Term(
      'kl', 'generalized_jsd', 2.0, kwargs={'temperature': 2.0,
                                            'beta': 0.3}),))
  constant = _losses_and_metrics((steps.Term(
      'kl', 'generalized_jsd', 1.0, num_steps=n, kwargs={'schedule': {
          'weight': ('constant', 2.0), 'temperature': ('constant', 2.0),
          'beta': ('constant', 0.3)}}),))
  assert [m['loss'] for m in plain] == [m['loss'] for m in constant]
  assert 'kl/weight' not in plain[0]
