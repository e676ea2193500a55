"""Self-distillation: BYOT and teacher-free losses by hand, a few steps."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.self_distillation import config as sd_config
from experiments.self_distillation import losses as sd_losses
from experiments.self_distillation import train as sd_train
from kd import models
from tests import run_checks


def _kl(p, q):
  return sum(a * math.log(a / b) for a, b in zip(p, q))


def _softmax(z):
  e = [math.exp(v) for v in z]
  return [v / sum(e) for v in e]


def test_virtual_teacher_and_teacher_free_by_hand():
  p_d = sd_losses.virtual_teacher(4, jnp.array([2]), 0.7)
  np.testing.assert_allclose(p_d, [[0.1, 0.1, 0.7, 0.1]], rtol=1e-6)
  s = [0.5, -1.0, 2.0, 0.0]
  t, alpha = 2.0, 0.25
  ce = -math.log(_softmax(s)[2])
  kl = _kl(_softmax([v / t for v in [0.1, 0.1, 0.7, 0.1]]),
           _softmax([v / t for v in s]))
  got = sd_losses.teacher_free(jnp.array([s]), jnp.array([2]), alpha, t, 0.7)
  np.testing.assert_allclose(got, (1 - alpha) * ce + alpha * t * t * kl,
                             rtol=1e-5)


def test_byot_by_hand_and_no_gradient_to_the_teacher():
  aux, final = [1.0, 0.0, -1.0], [0.0, 2.0, 0.0]
  f_aux, f_final = jnp.array([[1.0, 3.0]]), jnp.array([[0.0, 1.0]])
  alpha, t, w = 0.4, 2.0, 0.5
  want = ((1 - alpha) * -math.log(_softmax(aux)[1])
          + alpha * t * t * _kl(_softmax([v / t for v in final]),
                                _softmax([v / t for v in aux]))
          + w * (1 + 4) / 2)
  args = ([jnp.array([aux])], [f_aux], jnp.array([final]), f_final,
          jnp.array([1]), alpha, t, w)
  np.testing.assert_allclose(sd_losses.byot(*args), want, rtol=1e-5)
  g_final = jax.grad(lambda z: sd_losses.byot(
      args[0], args[1], z, f_final, jnp.array([1]), alpha, t, w))(
          jnp.array([final]))
  assert np.all(g_final == 0)


@pytest.mark.parametrize('mode, parallel', [('byot', 'pmap'),
                                            ('teacher_free', 'mesh')])
def test_a_few_steps(tmp_path, mode, parallel):
  c = sd_config.get_config(f'mode={mode},steps=4')
  c.update(eval_every=2, log_every=2, parallel=parallel)
  c.wandb.mode = 'disabled'
  run = str(tmp_path / 'run')
  summary = sd_train.train(c, run)
  assert summary['steps'] == 4
  model = models.create(c.model.name, 10, **c.model.kwargs.to_dict())
  rng = jax.random.key(c.seed)
  example = np.zeros((1, 40, 1), np.float32)
  final = run_checks.final_state(run, 4)
  run_checks.assert_moved(model.init(rng, example, train=False)['params'],
                          final['params'])
  variables = {'params': final['params'], **final['model_state']}
  apply = jax.jit(functools.partial(model.apply, variables, train=False))
  taps = tuple(c.self_distill.taps)
  if mode == 'byot':
    assert taps == ('hidden0',)
    feats = apply(example)[1]
    heads = sd_train.AuxHeads(taps, feats['embedding'].shape[-1], 10)
    # The auxiliary heads trained with the model.
    run_checks.assert_moved(heads.init(jax.random.fold_in(rng, 1), {
        t: jnp.zeros_like(feats[t]) for t in taps})['params'],
                            final['aux_params']['heads'], 'heads')
    heads_fn = jax.jit(functools.partial(
        heads.apply, {'params': final['aux_params']['heads']}))

  def logits_fn(x):
    logits, feats = apply(x)
    out = {'final': np.asarray(logits)}
    if mode == 'byot':
      for t, (l, _) in zip(taps, heads_fn(feats)):
        out[f'aux_{t}'] = np.asarray(l)
      out['ensemble'] = run_checks.ensemble(list(out.values()))
    return out

  recomputed = run_checks.accuracies(c, logits_fn)
  assert sorted(recomputed) == sorted(
      ['final', 'aux_hidden0', 'ensemble'] if mode == 'byot' else ['final'])
  run_checks.assert_accuracies(summary, recomputed)
  run_checks.assert_logged(
      run, summary, [f'{k}/test_accuracy' for k in recomputed],
      ('loss', 'accuracy'), log_every=2)


def test_unknown_tap_names_the_features(tmp_path):
  c = sd_config.get_config('mode=byot,steps=2,taps=stage9')
  c.wandb.mode = 'disabled'
  with pytest.raises(ValueError, match='stage9.*embedding'):
    sd_train.train(c, str(tmp_path / 'run'))
