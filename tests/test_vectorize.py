"""Runs trained together (`kd.vectorize`) equal the same runs trained alone."""
import json
import os

import numpy as np
import pytest

from kd import config as kd_config, train, vectorize
from kd.config import term

SEEDS = (0, 1, 2, 3)
TEMPERATURES = (1.0, 2.0, 4.0, 4.0)
LRS = (3e-3, 3e-3, 1e-3, 3e-3)


def _base(**overrides):
  c = kd_config.run_config()
  c.data.name, c.data.augment = 'kd_digits', False
  c.model.kwargs.hidden = (16,)
  c.batch_size, c.steps, c.log_every, c.checkpoint_every = 32, 40, 10, 20
  c.wandb.mode, c.evaluate.latency = 'disabled', False
  for k, v in overrides.items():
    c[k] = v
  return c


def _student(teacher_dir, seed, temperature, lr):
  c = _base(seed=seed)
  c.optimizer.lr = lr
  c.distill.teacher.update(workdir=teacher_dir, model='mlp',
                           kwargs={'hidden': (32,)})
  c.distill.terms['kd'] = term('kd', 1.0, temperature=temperature)
  return c


def _rows(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope='module')
def teacher_dir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('teacher'))
  c = _base(steps=60)
  c.model.kwargs.hidden = (32,)
  train.train_and_evaluate(c, workdir)
  return workdir


@pytest.fixture(scope='module')
def runs(tmp_path_factory, teacher_dir):
  """(the 4 runs' configs, their folders trained alone, trained together)."""
  root = tmp_path_factory.mktemp('runs')
  configs = [_student(teacher_dir, *v) for v in zip(SEEDS, TEMPERATURES, LRS)]
  alone = [str(root / f'alone{i}') for i in range(len(configs))]
  for c, w in zip(configs, alone):
    train.train_and_evaluate(c, w)
  together = [str(root / f'together{i}') for i in range(len(configs))]
  vectorize.train_all(configs, together)
  return configs, alone, together


def test_runs_trained_together_equal_runs_trained_alone(runs):
  _, alone, together = runs
  for a, t in zip(alone, together):
    ra, rt = _rows(a), _rows(t)
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
  firsts = [_rows(t)[0]['loss'] for t in together]
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
  d = _student(teacher_dir, 3, 4.0, 1e-3)
  d.mixup_alpha = 0.2
  with pytest.raises(ValueError, match=r'config\.mixup_alpha: 0 \(off\) in '
                     'one run'):
    vectorize.check_group([a, d])


def test_with_seeds_names_a_folder_per_seed(tmp_path):
  configs, dirs = vectorize.with_seeds(_base(), str(tmp_path), [3, 5])
  assert [c.seed for c in configs] == [3, 5]
  assert dirs == [str(tmp_path / 'seed=3'), str(tmp_path / 'seed=5')]
