"""Teacher-output cache: cached and live teachers train the same student;
the cache knows what made it and refuses anything else."""
import json
import os
import shutil

import jax
import numpy as np
import pytest

from kd import cache, config as kd_config, data, files, train
from kd.runs import latest_state, load_run


def _config(**overrides):
  c = kd_config.run_config()
  c.data.name, c.data.augment = 'kd_digits', False
  c.model.name, c.model.kwargs = 'mlp', {'hidden': (16,)}
  c.batch_size, c.steps, c.log_every, c.checkpoint_every = 32, 12, 6, 12
  c.optimizer.lr = 3e-3
  c.wandb.mode = 'disabled'
  c.evaluate.latency = False
  for k, v in overrides.items():
    c[k] = v
  return c


@pytest.fixture(scope='module')
def teacher_dir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('teacher'))
  c = _config(steps=20)
  c.model.name, c.model.kwargs = 'cnn', {'channels': (8,), 'dense': 16}
  train.train_and_evaluate(c, workdir)
  return workdir


def _student(teacher_dir, use_cache, cache_dir=''):
  c = _config()
  t = c.distill.teacher
  t.workdir, t.model = teacher_dir, 'cnn'
  t.kwargs = {'channels': (8,), 'dense': 16}
  t.cache, t.cache_dir = use_cache, cache_dir
  c.distill.ce_weight = 0.5
  c.distill.terms.kd = kd_config.term('kd', 1.0, temperature=4.0)
  c.distill.terms.hint = kd_config.term('hint', 0.1, 'embedding', 'embedding',
                                        adapter='regressor')
  return c


def _final(workdir):
  return latest_state(workdir, 'run')[0]


@pytest.fixture(scope='module')
def runs(teacher_dir, tmp_path_factory):
  root = tmp_path_factory.mktemp('runs')
  cache_dir = str(root / 'shared_cache')
  for name, use in (('live', False), ('cached', True)):
    train.train_and_evaluate(_student(teacher_dir, use, cache_dir),
                             str(root / name))
  return root, cache_dir


def test_cached_and_live_teachers_give_the_same_student(runs):
  root, _ = runs
  live, cached = _final(str(root / 'live')), _final(str(root / 'cached'))
  for part in ('params', 'aux_params'):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
                 live[part], cached[part])
  # The hint term the cached teacher's outputs give is the live teacher's.
  hints = {name: [r['hint'] for r in map(json.loads,
                                          open(root / name / 'metrics.jsonl'))
                  if 'hint' in r] for name in ('live', 'cached')}
  assert len(hints['live']) >= 2
  np.testing.assert_allclose(hints['cached'], hints['live'], rtol=1e-4)


def test_cache_rows_are_the_teachers_outputs_by_example_index(runs,
                                                              teacher_dir):
  _, cache_dir = runs
  meta = json.load(open(os.path.join(cache_dir, 'meta.json')))
  assert meta['outputs'] == {'embedding': [16], 'logits': [10]}
  assert meta['num_examples'] == data.num_examples('kd_digits', 'train')
  _, teacher, variables, _ = load_run(teacher_dir)
  images, _ = data.load_split('kd_digits', 'train')
  idx = np.array([0, 5, meta['num_examples'] - 1, 3])
  logits, feats = teacher.apply(variables, images[idx], train=False)
  opened = cache.TeacherCache(cache_dir, {}, ['logits', 'embedding'])
  got = opened.lookup(idx)
  np.testing.assert_allclose(got['logits'], logits, atol=1e-5)
  np.testing.assert_allclose(got['embedding'], feats['embedding'], atol=1e-5)


def test_a_cache_of_another_teacher_is_refused(runs, teacher_dir, tmp_path):
  _, cache_dir = runs
  other = str(tmp_path / 'other_teacher')
  c = _config(steps=20, seed=1)
  c.model.name, c.model.kwargs = 'cnn', {'channels': (8,), 'dense': 16}
  train.train_and_evaluate(c, other)
  with pytest.raises(cache.CacheMismatchError,
                     match=r'(?s)teacher.params_sha256.*teacher.workdir.*'
                           r'Delete it'):
    train.train_and_evaluate(_student(other, True, cache_dir),
                             str(tmp_path / 'student'))
  # Nothing was written over the shared cache.
  meta = json.load(open(os.path.join(cache_dir, 'meta.json')))
  assert meta['teacher']['workdir'] == os.path.abspath(teacher_dir)


def test_augmented_or_mixed_inputs_keep_the_teacher_live(teacher_dir,
                                                         tmp_path):
  c = _student(teacher_dir, True)
  c.data.augment = True
  with pytest.raises(ValueError, match='data.augment=True.*cache=False'):
    train.train_and_evaluate(c, str(tmp_path / 'a'))
  c = _student(teacher_dir, True)
  c.mixup_alpha = 0.2
  with pytest.raises(ValueError, match='mixup.*cache=False'):
    train.train_and_evaluate(c, str(tmp_path / 'b'))


def test_truncated_cache_file_is_named_with_the_fix(runs, tmp_path):
  """A cache file cut short (a disk filled, a copy interrupted): named
  before the first step, with the fix, not a bare numpy error."""
  _, cache_dir = runs
  copy = str(tmp_path / 'cache')
  shutil.copytree(cache_dir, copy)
  shard = os.path.join(copy, 'logits.0.npy')
  with open(shard, 'r+b') as f:
    f.truncate(os.path.getsize(shard) // 2)
  with pytest.raises(files.DamagedFileError,
                     match=rf'{shard} cannot be read .*cut short or damaged; '
                     rf'delete {copy} \(it is rebuilt on the next run\)'):
    cache.TeacherCache(copy, {}, ['logits', 'embedding'])
