"""Self-distillation: the virtual teacher by hand, the config's terms, a few
steps (the terms' formulas in the step: tests/test_variant_terms.py)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.self_distillation import config as sd_config
from experiments.self_distillation import losses as sd_losses
from experiments.self_distillation import train as sd_train
from kd import models
from tests import run_checks


def test_virtual_teacher_by_hand():
  p_d = sd_losses.virtual_teacher(4, jnp.array([2, 0]), 0.7)
  np.testing.assert_allclose(p_d, [[0.1, 0.1, 0.7, 0.1], [0.7, 0.1, 0.1, 0.1]],
                             rtol=1e-6)


def test_config_terms_carry_the_arguments():
  c = sd_config.get_config('mode=byot,alpha=0.4,temperature=2,'
                           'feature_weight=0.5')
  assert c.self_distill.alpha == 0.4
  kd, hint = c.distill.terms.kd, c.distill.terms.hint
  assert (kd.loss, kd.weight, kd.kwargs.temperature) == ('kd', 0.4, 2.0)
  assert (hint.loss, hint.weight, hint.student, hint.teacher) == (
      'hidden_mse', 0.5, 'embedding', 'embedding')
  c = sd_config.get_config('mode=teacher_free')
  assert list(c.distill.terms) == ['kd']
  assert (c.distill.terms.kd.weight, c.distill.terms.kd.kwargs.temperature
          ) == (0.5, 20.0)


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
