"""Deep mutual learning: the mutual term by hand, and a few real steps."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.online import config as online_config
from experiments.online import mutual
from experiments.online import train as online_train
from kd import models
from tests import run_checks


def _kl(p, q):
  return sum(a * math.log(a / b) for a, b in zip(p, q))


def test_mutual_kl_matches_hand_values():
  probs = [(0.8, 0.2), (0.5, 0.5), (0.1, 0.9)]
  logits = jnp.log(jnp.array([[p] for p in probs]))  # [3, 1, 2]
  got = mutual.mutual_kl(logits[:2])
  # Two students: each against the other alone.
  np.testing.assert_allclose(
      got, [_kl(probs[1], probs[0]), _kl(probs[0], probs[1])], rtol=1e-5)
  got = mutual.mutual_kl(logits)
  want = [sum(_kl(probs[j], probs[i]) for j in range(3) if j != i) / 2
          for i in range(3)]
  np.testing.assert_allclose(got, want, rtol=1e-5)
  with pytest.raises(ValueError):
    mutual.mutual_kl(logits[:1])


def test_mutual_kl_gradient_reaches_only_each_students_own_term():
  logits = jax.random.normal(jax.random.key(0), (2, 4, 5))
  g = jax.grad(lambda l: mutual.mutual_kl(l)[0])(logits)
  assert np.any(g[0] != 0) and np.all(g[1] == 0)
  # Temperature: T^2 KL of the softened distributions.
  p = jax.nn.softmax(logits / 3.0)
  want = 9.0 * jnp.mean(jnp.sum(p[1] * (jnp.log(p[1]) - jnp.log(p[0])), -1))
  np.testing.assert_allclose(mutual.mutual_kl(logits, 3.0)[0], want,
                             rtol=1e-5)


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
