"""Deep mutual learning: the mutual term by hand, and a few real steps."""
import functools
import math

import jax
import ml_collections as mc
import numpy as np
import optax
import pytest

from experiments.online import config as online_config
from experiments.online import train as online_train
from kd import models
from kd import train as kd_train
from kd.parallel import DataParallel
from tests import run_checks


def test_mutual_term_of_three_students_by_hand():
  """Student i's mutual value: mean over its peers j of KL(p_j || p_i) at
  the config's T = 1, from the students' outputs before the first step."""
  c = online_config.get_config('students=logreg+logreg+logreg')
  students = tuple(models.create('logreg', 3) for _ in range(3))
  s = mc.ConfigDict(dict(example=np.zeros((1, 4), np.float32),
                         tx=optax.sgd(0.0), num_examples=0))
  terms = kd_train.distill_terms(c)
  state = online_train.init_state(c, students, s, terms)
  x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
  batch = {'image': x, 'label': np.arange(5) % 3}
  parallel = DataParallel('pmap', 1)
  step = parallel.wrap(online_train.make_step(students, s.tx, terms), 1)
  _, metrics = step(parallel.replicate(state), parallel.shard(batch))
  metrics = parallel.unreplicate(metrics)
  p = [np.asarray(jax.nn.softmax(m.apply({'params': v}, x)[0]), np.float64)
       for m, v in zip(students, state.params)]
  kl = lambda a, b: np.mean(np.sum(a * np.log(a / b), -1))
  for i in range(3):
    want = np.mean([kl(p[j], p[i]) for j in range(3) if j != i])
    np.testing.assert_allclose(metrics[f'mutual_{i}'], want, rtol=1e-4)
  np.testing.assert_allclose(
      metrics['loss'], sum(metrics[f'ce_{i}'] + metrics[f'mutual_{i}']
                           for i in range(3)), rtol=1e-5)
  with pytest.raises(ValueError, match='at least 2 students'):
    online_train.make_step(students[:1], s.tx, terms)


@pytest.mark.parametrize('parallel', ['pmap', 'mesh'])
def test_a_few_steps_of_two_students(tmp_path, parallel):
  c = online_config.get_config('students=mlp+logreg,steps=4')
  c.update(eval_every=2, log_every=2, parallel=parallel)
  c.wandb.mode = 'disabled'
  run = str(tmp_path / 'run')
  summary = online_train.train(c, run)
  assert summary['steps'] == 4
  for key in ('student_0', 'student_1', 'ensemble'):
    assert math.isfinite(summary[f'{key}/test_loss'])
  final = run_checks.final_state(run, 4)
  member = lambda tree, i: tree[i] if isinstance(tree, (list, tuple)) \
      else tree[str(i)]  # Orbax may restore a tuple as either.
  example = np.zeros((1, 40, 1), np.float32)
  applies = {}
  for i, (_, m) in enumerate(sorted(c.online.students.items())):
    student = models.create(m.name, 10, **m.kwargs.to_dict())
    # Each student moved from its own seed's initialisation.
    run_checks.assert_moved(student.init(
        jax.random.fold_in(jax.random.key(c.seed), i), example,
        train=False)['params'], member(final['params'], i), f'student_{i}')
    variables = {'params': member(final['params'], i),
                 **member(final['model_state'], i)}
    applies[f'student_{i}'] = jax.jit(functools.partial(
        student.apply, variables, train=False))

  def logits_fn(x):
    out = {k: np.asarray(f(x)[0]) for k, f in applies.items()}
    return {**out, 'ensemble': run_checks.ensemble(list(out.values()))}

  # The students' and their ensemble's accuracies, from the checkpoint.
  run_checks.assert_accuracies(summary, run_checks.accuracies(c, logits_fn))
  run_checks.assert_logged(
      run, summary, [f'{k}/test_accuracy' for k in applies] + [
          'ensemble/test_accuracy'],
      ('loss', 'ce_0', 'ce_1', 'mutual_0', 'mutual_1'), log_every=2)
