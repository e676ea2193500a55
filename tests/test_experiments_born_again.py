"""Born-again ablations by hand, and a 3-generation pipeline of a few steps."""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.born_again import config as ban_config
from experiments.born_again import score
from experiments.born_again import losses as ban_losses
from kd import main as kd_main
from kd import runs
from tests import run_checks


def test_cwtm_weights_label_ce_by_teacher_max():
  # Teacher max probabilities 0.8 and 0.5; student CE -log 0.5 and -log 0.25.
  teacher = jnp.log(jnp.array([[0.8, 0.2], [0.5, 0.5]]))
  student = jnp.log(jnp.array([[0.5, 0.5], [0.75, 0.25]]))
  want = (0.8 * np.log(2) + 0.5 * np.log(4)) / 1.3
  np.testing.assert_allclose(
      ban_losses.cwtm(student, teacher, jnp.array([0, 1])), want, rtol=1e-5)


def test_dkpp_keeps_the_argmax_and_permutes_the_rest():
  t = jax.random.normal(jax.random.key(0), (64, 10))
  out = ban_losses.permute_dark_knowledge(t, jax.random.key(1))
  np.testing.assert_array_equal(jnp.argmax(out, -1), jnp.argmax(t, -1))
  np.testing.assert_allclose(jnp.max(out, -1), jnp.max(t, -1))
  np.testing.assert_allclose(jnp.sort(out, -1), jnp.sort(t, -1))
  assert np.mean(np.asarray(out) != np.asarray(t)) > 0.5  # Really shuffled.


def test_variants_register_their_pieces():
  c = ban_config.get_config('variant=dkpp,generations=2')
  assert list(c.stage_order) == ['gen0', 'gen1', 'gen2']
  assert c.stages.gen0.distill.teacher.workdir == ''
  assert c.stages.gen2.distill.teacher.workdir == 'gen1'
  assert c.stages.gen2.distill.terms.kd.adapter == 'dkpp'
  assert c.stages.gen1.seed == 10
  with pytest.raises(ValueError):
    ban_config.get_config('variant=nope')


@pytest.mark.parametrize('variant', ['cwtm', 'dkpp'])
def test_generations_train_and_ensemble(tmp_path, variant):
  c = ban_config.get_config(f'variant={variant},generations=2,steps=3,'
                            f'gen0_dir={tmp_path / "shared_gen0"}')
  for stage in c.stages.values():
    stage.update(eval_every=0, log_every=1)
    stage.wandb.mode = 'disabled'
  run = str(tmp_path / 'run')
  os.makedirs(run)
  with open(os.path.join(run, 'config.json'), 'w') as f:  # As kd.main does.
    f.write(c.to_json())
  summary = kd_main.run_pipeline(c, run)
  assert summary['gen2/steps'] == 3
  assert os.path.exists(tmp_path / 'shared_gen0' / 'summary.json')
  result = score.score_generations(run)
  dirs = {'gen0': str(tmp_path / 'shared_gen0'),
          'gen1': os.path.join(run, 'gen1'), 'gen2': os.path.join(run, 'gen2')}
  members = {}
  for gen, d in dirs.items():
    run_checks.assert_run_moved(d, 3)  # Each generation trained.
    config, model, variables, _ = runs.load_run(d)
    members[gen] = jax.jit(functools.partial(model.apply, variables,
                                             train=False))
    run_checks.assert_logged(d, runs.summary(d), ('test_accuracy',),
                             ('loss',), log_every=1)
    # The pipeline reports each stage's own test.
    assert summary[f'{gen}/test_accuracy'] == runs.summary(d)['test_accuracy']

  def logits_fn(x):
    out = {gen: np.asarray(apply(x)[0]) for gen, apply in members.items()}
    return {**out, 'ensemble_gen1-2': run_checks.ensemble(
        [out['gen1'], out['gen2']]), 'ensemble_gen0-2': run_checks.ensemble(
            list(out.values()))}

  # Generations and ensembles recomputed from the members' logits.
  recomputed = run_checks.accuracies(config, logits_fn)
  assert set(recomputed) | {'ensemble_gen0-1'} == {
      k.split('/')[0] for k in result}
  run_checks.assert_accuracies(result, recomputed)
