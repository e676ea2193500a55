"""Adversarial distillation: game losses by hand, one step's discriminator
update against a hand-made one, and a few real steps."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs.mnist1d import train as recipes
from experiments.adversarial import config as adv_config
from experiments.adversarial import discriminator as disc_lib
from experiments.adversarial import train as adv_train
from kd import models
from kd import optim
from kd import train as kd_train
from kd import variant
from kd.parallel import DataParallel
from tests import run_checks


def test_game_losses_match_hand_values():
  d_t, d_s = jnp.array([2.0, -1.0]), jnp.array([0.5, 0.0])
  sp = lambda x: math.log1p(math.exp(x))
  np.testing.assert_allclose(
      disc_lib.discriminator_loss(d_t, d_s, 'non_saturating'),
      (sp(-2) + sp(1)) / 2 + (sp(0.5) + sp(0)) / 2, rtol=1e-6)
  np.testing.assert_allclose(
      disc_lib.discriminator_loss(d_t, d_s, 'least_squares'),
      0.5 * (1 + 4) / 2 + 0.5 * 0.25 / 2, rtol=1e-6)
  np.testing.assert_allclose(disc_lib.generator_loss(d_s, 'non_saturating'),
                             (sp(-0.5) + sp(0)) / 2, rtol=1e-6)
  np.testing.assert_allclose(disc_lib.generator_loss(d_s, 'least_squares'),
                             0.5 * (0.25 + 1) / 2, rtol=1e-6)
  # Right on teacher 2.0, wrong on -1.0; right on student 0.0, wrong on 0.5.
  assert disc_lib.accuracy(d_t, d_s, 'non_saturating') == 0.5
  with pytest.raises(ValueError, match='least_squares'):
    disc_lib.generator_loss(d_s, 'wasserstein')


def test_disc_input_concatenates_what_is_asked():
  logits = jnp.log(jnp.array([[0.25, 0.75]]))
  x = adv_train.disc_input(logits, jnp.array([[3.0]]), jnp.array([1]), 1.0, 2,
                           conditional=True)
  np.testing.assert_allclose(x, [[0.25, 0.75, 3.0, 0.0, 1.0]], rtol=1e-6)
  x = adv_train.disc_input(logits, None, jnp.array([1]), 1.0, 2,
                           conditional=False, raw_logits=True)
  np.testing.assert_allclose(x, logits, rtol=1e-6)


@pytest.fixture(scope='module')
def teacher_dir(tmp_path_factory):
  run = str(tmp_path_factory.mktemp('teacher') / 'cnn')
  c = recipes.recipe('mlp', 0, steps=3)
  c.model.kwargs.hidden = (32,)
  c.update(eval_every=0)
  c.wandb.mode = 'disabled'
  kd_train.train_and_evaluate(c, run)
  return run


@pytest.mark.parametrize('form', disc_lib.FORMS)
def test_one_step_updates_the_discriminator_as_by_hand(teacher_dir, form):
  c = adv_config.get_config(f'form={form},teacher_dir={teacher_dir},'
                            'embedding=1,conditional=1')
  a = c.adversarial
  student = models.create('mlp', 10, hidden=(16, 16))
  _, teacher, t_vars, _ = adv_train.runs.load_run(teacher_dir)
  disc = disc_lib.Discriminator((8,))
  tx, _ = optim.create(c.optimizer, 10)
  disc_tx = optax.adam(a.disc_lr, b1=0.5)
  x = jax.random.normal(jax.random.key(0), (6, 40, 1))
  batch = {'image': x, 'label': jnp.arange(6) % 10}
  state = adv_train.init_state(c, student, teacher, disc, tx, disc_tx,
                               x[:1], 10)
  assert state.student.aux_params['proj']['kernel'].shape == (16, 32)
  parallel = DataParallel('pmap', 1)
  step = parallel.wrap(adv_train.make_step(student, teacher, disc, tx,
                                           disc_tx, a, 10), 2)
  new, metrics = step(parallel.replicate(state), parallel.replicate(t_vars),
                      parallel.shard(batch))

  # By hand: D's inputs from both models before the step, one Adam update.
  t_logits, t_feats = teacher.apply(t_vars, x, train=False)
  s_vars = {'params': state.student.params}
  s_logits, s_feats = student.apply(s_vars, x, train=False)
  proj = state.student.aux_params['proj']
  s_emb = s_feats['embedding'] @ proj['kernel'] + proj['bias']
  t_in = adv_train.disc_input(t_logits, t_feats['embedding'], batch['label'],
                              a.temperature, 10, True)
  s_in = adv_train.disc_input(s_logits, s_emb, batch['label'], a.temperature,
                              10, True)
  loss_fn = lambda p: disc_lib.discriminator_loss(
      disc.apply(p, t_in), disc.apply(p, s_in), form)
  grads = jax.grad(loss_fn)(state.disc_params)
  updates, _ = disc_tx.update(grads, state.disc_opt_state, state.disc_params)
  want = optax.apply_updates(state.disc_params, updates)
  got = parallel.unreplicate(new.disc_params)
  jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, atol=1e-6),
               got, want)
  np.testing.assert_allclose(parallel.unreplicate(metrics)['disc_loss'],
                             loss_fn(state.disc_params), rtol=1e-5)
  # The student moved too, against the discriminator before its update.
  assert not np.allclose(parallel.unreplicate(new.student.params)['head'][
      'kernel'], state.student.params['head']['kernel'])


@pytest.mark.parametrize('parallel', ['pmap', 'mesh'])
def test_a_few_steps(teacher_dir, tmp_path, parallel):
  c = adv_config.get_config(f'teacher_dir={teacher_dir},steps=4,disc_steps=2,'
                            'raw_logits=1')
  c.update(eval_every=2, log_every=2, parallel=parallel)
  c.wandb.mode = 'disabled'
  run = str(tmp_path / 'run')
  summary = adv_train.train(c, run)
  assert summary['steps'] == 4
  # Both players moved from where the seed puts them.
  s = variant.setup(c, 'adversarial')
  student = variant.create_model(s, c.model)
  _, teacher, t_vars, _ = adv_train.runs.load_run(teacher_dir)
  disc = disc_lib.Discriminator(tuple(c.adversarial.disc_hidden))
  initial = adv_train.init_state(c, student, teacher, disc, s.tx,
                                 optax.adam(1.0), s.example, s.num_classes)
  final = run_checks.final_state(run, 4)
  run_checks.assert_moved(initial.student.params, final['student']['params'])
  run_checks.assert_moved(initial.disc_params, final['disc_params'], 'disc')
  # The reported accuracies are the checkpoint's and the teacher's.
  s_vars = {'params': final['student']['params'],
            **final['student']['model_state']}
  apply = jax.jit(lambda x: {
      'student': student.apply(s_vars, x, train=False)[0],
      'teacher': teacher.apply(t_vars, x, train=False)[0]})
  run_checks.assert_accuracies(summary, run_checks.accuracies(c, apply))
  run_checks.assert_logged(
      run, summary, ('student/test_accuracy', 'teacher/test_accuracy'),
      ('loss', 'disc_loss', 'adv'), log_every=2)
