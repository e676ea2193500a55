"""Runs trained together (`kd.vectorize`) equal the same runs trained alone."""
import json
import os

import jax
import numpy as np
import pytest

from kd import checkpoint, config as kd_config, train, vectorize
from kd.config import term
from tests import run_checks

SEEDS = (0, 1, 2, 3)
TEMPERATURES = (1.0, 2.0, 4.0, 4.0)
LRS = (3e-3, 3e-3, 1e-3, 3e-3)
MIXUP = (0.1, 0.2, 0.4, 0.2)


def _base(**overrides):
  c = kd_config.run_config()
  c.data.name, c.data.augment = 'kd_digits', False
  c.model.kwargs.hidden = (16,)
  c.batch_size, c.steps, c.log_every, c.checkpoint_every = 32, 40, 10, 20
  c.wandb.mode, c.evaluate.latency = 'disabled', False
  for k, v in overrides.items():
    c[k] = v
  return c


def _student(teacher_dir, seed, temperature, lr, mixup=0.0):
  c = _base(seed=seed, mixup_alpha=mixup)
  c.optimizer.lr = lr
  c.distill.teacher.update(workdir=teacher_dir, model='mlp',
                           kwargs={'hidden': (32,)})
  c.distill.terms['kd'] = term('kd', 1.0, temperature=temperature)
  return c


@pytest.fixture(scope='module')
def teacher_dir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('teacher'))
  c = _base(steps=60)
  c.model.kwargs.hidden = (32,)
  train.train_and_evaluate(c, workdir)
  return workdir


@pytest.fixture(scope='module')
def runs(tmp_path_factory, teacher_dir):
  """(the 4 runs' configs, their folders trained alone, trained together):
  different seeds, temperatures, learning rates and mixup alphas."""
  root = tmp_path_factory.mktemp('runs')
  configs = [_student(teacher_dir, *v)
             for v in zip(SEEDS, TEMPERATURES, LRS, MIXUP)]
  alone = [str(root / f'alone{i}') for i in range(len(configs))]
  for c, w in zip(configs, alone):
    train.train_and_evaluate(c, w)
  together = [str(root / f'together{i}') for i in range(len(configs))]
  vectorize.train_all(configs, together)
  return configs, alone, together


def test_runs_trained_together_equal_runs_trained_alone(runs):
  _, alone, together = runs
  for a, t in zip(alone, together):
    ra, rt = run_checks.rows(a), run_checks.rows(t)
    assert [r['step'] for r in ra] == [r['step'] for r in rt]
    assert [sorted(r) for r in ra] == [sorted(r) for r in rt]
    np.testing.assert_allclose(rt[0]['loss'], ra[0]['loss'], atol=1e-4)
    np.testing.assert_allclose(rt[0]['kd'], ra[0]['kd'], atol=1e-4)
    np.testing.assert_allclose(rt[0]['learning_rate'], ra[0]['learning_rate'],
                               rtol=1e-6)
    sa, st = (json.load(open(os.path.join(d, 'summary.json')))
              for d in (a, t))
    assert sorted(sa) == sorted(st)
    assert abs(sa['test_accuracy'] - st['test_accuracy']) <= 0.005
  # The runs differ: different seeds, temperatures, learning rates.
  firsts = [run_checks.rows(t)[0]['loss'] for t in together]
  assert len(set(np.round(firsts, 4))) == len(firsts)


def test_each_run_writes_the_files_of_a_run_alone(runs):
  configs, alone, together = runs
  for c, a, t in zip(configs, alone, together):
    assert sorted(os.listdir(a)) == sorted(os.listdir(t))
    assert (sorted(os.listdir(os.path.join(a, 'checkpoints'))) ==
            sorted(os.listdir(os.path.join(t, 'checkpoints'))) == ['20', '40'])
    with open(os.path.join(t, 'config.json')) as f:
      assert json.load(f) == json.loads(json.dumps(c.to_dict()))


def test_finished_group_is_reused(runs, capsys):
  configs, _, together = runs
  summaries = vectorize.train_all(configs, together)
  assert 'already finished' in capsys.readouterr().out
  assert [s['test_accuracy'] for s in summaries] == [
      json.load(open(os.path.join(t, 'summary.json')))['test_accuracy']
      for t in together]


def test_groups_split_on_fields_that_change_the_step(teacher_dir):
  a, b = _student(teacher_dir, 0, 4.0, 1e-3), _student(teacher_dir, 1, 2.0,
                                                       3e-3)
  c = _student(teacher_dir, 2, 4.0, 1e-3)
  c.batch_size = 64
  assert vectorize.group([a, b, c]) == [[a, b], [c]]
  with pytest.raises(ValueError, match=r'may differ only in seed, '
                     r'optimizer\.lr.*config\.batch_size: 32 vs 64\. Train '
                     'them in separate groups'):
    vectorize.check_group([a, c])
  d = _student(teacher_dir, 3, 4.0, 1e-3, mixup=0.2)
  with pytest.raises(ValueError, match=r'config\.mixup_alpha: 0 \(off\) in '
                     'one run'):
    vectorize.check_group([a, d])


def test_with_seeds_names_a_folder_per_seed(tmp_path):
  configs, dirs = vectorize.with_seeds(_base(), str(tmp_path), [3, 5])
  assert [c.seed for c in configs] == [3, 5]
  assert dirs == [str(tmp_path / 'seed=3'), str(tmp_path / 'seed=5')]


def test_hinton_sweep_plans_one_teacher_and_a_group_per_method(tmp_path):
  from launch import sweep  # pylint: disable=import-outside-toplevel
  spec = sweep.load_spec('launch/specs/mnist1d_hinton.py')
  todo = sweep.expand(spec, str(tmp_path))
  configs = [sweep.load_config(spec, r) for r in todo]
  teachers, students = vectorize.plan(configs, [r.workdir for r in todo])
  assert [len(g) for g in teachers] == [1]
  assert len(teachers[0][0].users) == len(todo) == 50
  # scratch, kd at 5 temperatures, dkd, dist, rkd, logit_mse; 5 seeds each.
  assert sorted(len(g) for g in students) == [5, 5, 5, 5, 5, 25]
  kd_group = max(students, key=len)
  assert sorted({j.config.distill.terms.kd.kwargs.temperature
                 for j in kd_group}) == [1, 2, 4, 8, 20]


def test_interrupted_group_resumes_from_the_latest_common_checkpoint(
    tmp_path, runs, monkeypatch, capsys):
  configs, _, together = runs
  workdirs = [str(tmp_path / f'run{i}') for i in range(len(configs))]
  real, saved = checkpoint.save, []

  def save_then_stop(mngr, step, state):
    real(mngr, step, state)
    saved.append(step)
    if saved == [20] * 4 + [40] * 2:  # Runs 0 and 1 saved step 40, 2 and 3 not.
      raise KeyboardInterrupt('simulated interruption')

  monkeypatch.setattr(checkpoint, 'save', save_then_stop)
  with pytest.raises(KeyboardInterrupt):
    vectorize.train_all(configs, workdirs)
  monkeypatch.undo()
  capsys.readouterr()
  vectorize.train_all(configs, workdirs)
  assert 'resuming from step 20' in capsys.readouterr().out
  for t, w in zip(together, workdirs):
    assert [r['step'] for r in run_checks.rows(w)] == [r['step'] for r in run_checks.rows(t)]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
                 run_checks.latest_params(t), run_checks.latest_params(w))


def test_group_with_four_steps_per_call_trains_the_same_parameters(tmp_path,
                                                                   runs):
  configs, _, together = runs
  configs, together = configs[:2], together[:2]  # A group of 2 is enough.
  workdirs = [str(tmp_path / f'run{i}') for i in range(len(configs))]
  fours = []
  for c in configs:
    c = c.copy_and_resolve_references()
    c.steps_per_dispatch, c.log_every = 4, 20
    fours.append(c)
  vectorize.train_all(fours, workdirs)
  for t, w in zip(together, workdirs):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
                 run_checks.latest_params(t), run_checks.latest_params(w))
    assert [r['step'] for r in run_checks.rows(w)] == [20, 40, 40]


def test_runs_of_one_data_stream_read_one_pipeline():
  # Seed 0 at two temperatures draws the same batches: one iterator serves
  # both; seed 1 and another batch size each get their own.
  configs = [_student('t', 0, 1.0, 3e-3), _student('t', 0, 4.0, 1e-3),
             _student('t', 1, 1.0, 3e-3), _base(seed=0, batch_size=16)]
  made = []

  def make(c):
    made.append(c)
    return iter([f'seed{c.seed}b{c.batch_size}/{i}' for i in range(3)])

  stream_of, batches = vectorize.shared_streams(configs, make)
  assert len(made) == 3 and stream_of.tolist() == [0, 0, 1, 2]
  assert list(batches) == [[f'seed0b32/{i}', f'seed1b32/{i}', f'seed0b16/{i}']
                           for i in range(3)]


def test_a_shared_teacher_runs_once_per_stream_and_steps_the_same():
  # Runs 0 and 1 (temperatures 1 and 4) read stream 0, run 2 stream 1: the
  # teacher's forward pass on the 2 distinct batches, gathered per run,
  # gives the step of each run with its own copy and a live teacher.
  from kd import models, steps  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  student = models.create('mlp', 10, hidden=(8,))
  teacher = models.create('mlp', 10, hidden=(16,))
  rng = np.random.default_rng(0)
  distinct = {'image': rng.normal(size=(2, 8, 6)).astype(np.float32),
              'label': rng.integers(0, 10, (2, 8)).astype(np.int32)}
  stream_of = np.array([0, 0, 1])
  per_run = jax.tree.map(lambda x: x[stream_of], distinct)
  t_vars = teacher.init(jax.random.key(9), distinct['image'][0])
  tx = optax.sgd(0.1)
  states = vectorize.stack([steps.create_state(
      student, tx, jax.random.key(i), distinct['image'][0]) for i in range(3)])
  values = {'t': np.array([1.0, 4.0, 2.0], np.float32)}

  def make(live):
    return lambda v: steps.make_distill_step(
        student, teacher if live else None, tx,
        (steps.Term('kd', 'kd', 1.0, kwargs={'temperature': v['t']}),), 1.0)

  forward = lambda v, x: steps.outputs(*teacher.apply(v, x, train=False))
  run = lambda step, batches: jax.vmap(
      step, in_axes=(0, None, 0), axis_name='batch')(
          jax.tree.map(lambda x: x[None], states), t_vars,
          jax.tree.map(lambda x: x[None], batches))
  alone = run(steps.vectorized(make(True), values), per_run)
  shared = run(steps.vectorized(make(False), values, stream_of,
                                forward), distinct)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
               alone, shared)
  assert len(set(np.round(np.asarray(shared[1]['kd'][0]), 5))) == 3
