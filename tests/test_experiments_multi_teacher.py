"""Multi-teacher weights against hand-computed values, and a few real steps."""
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.multi_teacher import config as mt_config
from experiments.multi_teacher import train as mt_train
from experiments.multi_teacher import weights
from configs.mnist1d import train as recipes
from kd import losses
from kd import models
from kd import runs
from kd import train as kd_train
from tests import run_checks


def _two_class(*probs):
  """[K, 1, 2] logits whose class-0 probabilities are `probs`."""
  return jnp.log(jnp.array([[[p, 1 - p]] for p in probs]))


def test_mean_and_fixed():
  t = jnp.zeros((2, 3, 5))
  np.testing.assert_allclose(weights.mean(t), 0.5)
  np.testing.assert_allclose(weights.fixed(t, (1.0, 3.0))[:, 0], [0.25, 0.75])


def test_confidence_matches_hand_values():
  # CE_k = -log p_k, so softmax_k(CE_k) = (1/p_k) / sum_j (1/p_j).
  # p = (0.8, 0.5): 1/p = (1.25, 2); w_1 = 1 - 1.25/3.25 = 8/13.
  w = weights.confidence(_two_class(0.8, 0.5), jnp.array([0]))
  np.testing.assert_allclose(w[:, 0], [8 / 13, 5 / 13], rtol=1e-5)
  # p = (0.5, 0.25, 0.8): 1/p = (2, 4, 1.25), sum 7.25; w = (1 - s) / 2.
  w = weights.confidence(_two_class(0.5, 0.25, 0.8), jnp.array([0]))
  np.testing.assert_allclose(
      w[:, 0], [5.25 / 14.5, 3.25 / 14.5, 6 / 14.5], rtol=1e-5)
  with pytest.raises(ValueError):
    weights.confidence(_two_class(0.5), jnp.array([0]))


def test_entropy_favours_the_certain_teacher():
  # exp(-H) = prod_c p_c^p_c: 0.8^0.8 0.2^0.2 for the first, 0.5 for the second.
  a = 0.8**0.8 * 0.2**0.2
  w = weights.entropy(_two_class(0.8, 0.5))
  np.testing.assert_allclose(w[:, 0], [a / (a + 0.5), 0.5 / (a + 0.5)],
                             rtol=1e-5)


@pytest.mark.parametrize('gram, expected', [
    (np.eye(2), [0.5, 0.5]),
    (np.diag([4.0, 1.0]), [0.2, 0.8]),  # min 4a^2 + (1-a)^2 at a = 0.2.
    (np.array([[1.0, 2.0], [2.0, 4.0]]), [1.0, 0.0]),  # g2 = 2 g1: keep g1.
    (np.diag([1.0, 4.0, 4.0]), [2 / 3, 1 / 6, 1 / 6]),  # w_k ~ 1 / |g_k|^2.
    # g3 = 0 is in the hull: all weight on it.
    (np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]),
     [0.0, 0.0, 1.0]),
])
def test_min_norm_against_hand_solutions(gram, expected):
  np.testing.assert_allclose(weights.min_norm(jnp.asarray(gram)), expected,
                             atol=5e-3)


def test_kd_gradients_are_the_kd_loss_gradients():
  s = jax.random.normal(jax.random.key(0), (3, 5))
  t = jax.random.normal(jax.random.key(1), (2, 3, 5))
  g = weights.kd_gradients(s, t, 4.0)
  for k in range(2):
    # kd() averages over the batch of 3.
    want = 3 * jax.grad(lambda x: losses.get('kd')(x, t[k], 4.0))(s)
    np.testing.assert_allclose(g[k], want, rtol=1e-5, atol=1e-6)


def test_ae_kd_puts_all_weight_on_a_teacher_the_student_matches():
  t = jax.random.normal(jax.random.key(1), (2, 4, 5))
  w = weights.ae_kd(t[1], t, 2.0)  # Teacher 1's KD gradient is zero.
  np.testing.assert_allclose(w, [[0.0] * 4, [1.0] * 4], atol=1e-6)


def test_one_teacher_mixture_is_plain_kd():
  s = jax.random.normal(jax.random.key(0), (3, 5))
  t = jax.random.normal(jax.random.key(1), (1, 3, 5))
  target = weights.combine(weights.mean(t), t, 4.0)
  np.testing.assert_allclose(weights.kd_to_target(s, target, 4.0),
                             losses.logits.kd(s, t[0], 4.0), rtol=1e-5)


@pytest.fixture(scope='module')
def teacher_root(tmp_path_factory):
  """Two tiny MNIST-1D teachers of different architectures, 3 steps each."""
  root = tmp_path_factory.mktemp('teachers')
  for model in ('logreg', 'mlp'):
    c = recipes.recipe(model, 0, steps=3)
    c.eval_every = 0
    c.wandb.mode = 'disabled'
    kd_train.train_and_evaluate(c, str(root / f'model={model}__seed=0'))
  return str(root)


@pytest.mark.parametrize('mode, parallel', [('ae_kd', 'pmap'),
                                            ('confidence', 'mesh')])
def test_a_few_steps_with_two_teachers(teacher_root, tmp_path, mode, parallel):
  c = mt_config.get_config(f'mode={mode},steps=4,root={teacher_root},'
                           'teachers=logreg:0+mlp:0')
  c.update(eval_every=2, log_every=2, parallel=parallel)
  c.wandb.mode = 'disabled'
  run = str(tmp_path / 'run')
  summary = mt_train.train(c, run)
  assert summary['steps'] == 4
  assert math.isfinite(summary['student/test_loss'])
  student = models.create(c.model.name, 10, **c.model.kwargs.to_dict())
  example = np.zeros((1, 40, 1), np.float32)
  final = run_checks.final_state(run, 4)
  run_checks.assert_moved(  # The student trained from its seed's init.
      student.init(jax.random.key(c.seed), example, train=False)['params'],
      final['params'])
  # Each teacher scores as its own run did; the student as its checkpoint;
  # the ensemble as the mean of the teachers' distributions.
  loaded = [runs.load_run(d)[1:3] for d in c.multi.teachers]
  for k, d in enumerate(c.multi.teachers):
    assert summary[f'teacher_{k}/test_accuracy'] == runs.summary(d)[
        'test_accuracy']
  s_vars = {'params': final['params'], **final['model_state']}
  apply = jax.jit(lambda x: {
      'student': student.apply(s_vars, x, train=False)[0],
      **{f'teacher_{k}': t.apply(v, x, train=False)[0]
         for k, (t, v) in enumerate(loaded)}})

  def logits_fn(x):
    out = {k: np.asarray(v) for k, v in apply(x).items()}
    return {**out, 'ensemble': run_checks.ensemble(
        [out['teacher_0'], out['teacher_1']])}

  run_checks.assert_accuracies(summary, run_checks.accuracies(c, logits_fn))
  run_checks.assert_logged(run, summary, ('student/test_accuracy',),
                           ('loss', 'ce', 'kd', 'weight_0', 'weight_1'),
                           log_every=2)
  with open(os.path.join(run, 'summary.json')) as f:
    assert json.load(f) == summary


def test_a_feature_term_pairs_the_student_with_a_chosen_teacher(
    teacher_root, tmp_path):
  c = mt_config.get_config(f'mode=mean,steps=3,root={teacher_root},'
                           'teachers=logreg:0+mlp:0,hint=1')
  c.update(eval_every=0, log_every=1)
  c.wandb.mode = 'disabled'
  mt_train.train(c, str(tmp_path / 'run'))
  rows = [json.loads(l) for l in open(tmp_path / 'run' / 'metrics.jsonl')]
  hints = [r['hint'] for r in rows if 'hint' in r]
  assert len(hints) == 3 and all(h > 0 for h in hints)
  with pytest.raises(ValueError, match='hint.*teacher 2.*2 teachers'):
    bad = mt_config.get_config(f'mode=mean,steps=3,root={teacher_root},'
                               'teachers=logreg:0+mlp:0,hint=2')
    bad.wandb.mode = 'disabled'
    mt_train.train(bad, str(tmp_path / 'bad'))
