"""Every method of the CIFAR-100 benchmark config runs on mock CIFAR-100."""
import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs.cifar100 import distill
from kd import main
from tests.mock_tfds import metadata_dir

TEACHER, STUDENT = 'cnn', 'cnn'
TINY = {'channels': (4, 8, 8), 'dense': 16}  # Three stages, as the zoo's.
EXAMPLES = 32


def _small(stage, data_dir):
  stage.model.kwargs = dict(TINY)
  if stage.distill.teacher.model:
    stage.distill.teacher.kwargs = dict(TINY)
  stage.data.data_dir = data_dir
  stage.batch_size = stage.eval_batch_size = 8
  stage.steps, stage.log_every, stage.checkpoint_every = 3, 1, 3
  stage.wandb.mode = 'disabled'
  stage.evaluate.latency = False


@pytest.fixture(scope='module')
def mock_cifar(tmp_path_factory):
  root = metadata_dir(str(tmp_path_factory.mktemp('tfds')),
                      {'cifar100': ('train', 'test')}, EXAMPLES)
  with tfds.testing.mock_data(num_examples=EXAMPLES, data_dir=root):
    yield root


@pytest.fixture(scope='module')
def teacher_dir(mock_cifar, tmp_path_factory):
  c = distill.get_config(f'teacher={TEACHER},student={STUDENT},method=kd')
  workdir = str(tmp_path_factory.mktemp('pipeline'))
  _small(c.stages.teacher, mock_cifar)
  with c.unlocked():
    c.stage_order = ('teacher',)
  main.run_pipeline(c, workdir)
  return os.path.join(workdir, 'teacher')


def test_recipe_matches_the_benchmark():
  c = distill.get_config('teacher=resnet32x4,student=ShuffleV2,method=crd')
  t, s = c.stages.teacher, c.stages.student
  assert t.steps == 240 * 781 and t.batch_size == 64
  assert t.optimizer.lr == 0.05 and s.optimizer.lr == 0.01
  assert t.optimizer.boundaries == (150 * 781, 180 * 781, 210 * 781)
  assert s.optimizer.weight_decay == 5e-4 and s.optimizer.momentum == 0.9
  assert s.distill.terms.crd.adapter_kwargs.num_negatives == 16384
  with pytest.raises(ValueError, match="unknown method 'crdd'.*crd"):
    distill.get_config('method=crdd')


@pytest.mark.parametrize('method', sorted(distill.METHODS))
def test_method_runs_a_few_steps(method, mock_cifar, teacher_dir, tmp_path):
  c = distill.get_config(f'teacher={TEACHER},student={STUDENT},method={method}')
  stage = c.stages.student
  _small(stage, mock_cifar)
  stage.distill.teacher.workdir = teacher_dir
  for t in stage.distill.terms.values():
    if t.adapter == 'crd':
      t.adapter_kwargs.num_negatives = 16
  with c.unlocked():
    c.stage_order = ('student',)
  summary = main.run_pipeline(c, str(tmp_path))
  rows = [r for r in map(json.loads, open(tmp_path / 'student' /
                                         'metrics.jsonl')) if 'loss' in r]
  assert len(rows) == 3
  for name in stage.distill.terms:
    assert all(np.isfinite(r[name]) for r in rows), name
  assert 0.0 <= summary['student/test_accuracy'] <= 1.0


def test_imagenet_pair_smoke_on_mock_data(tmp_path):
  from configs.imagenet import distill as imagenet  # pylint: disable=import-outside-toplevel
  root = metadata_dir(str(tmp_path / 'tfds'),
                      {'imagenet2012': ('train', 'validation')}, 16)
  c = imagenet.get_config('teacher=resnet18_imagenet,student=resnet18_imagenet,'
                          'method=kd,batch=8,epochs=1,image_size=32')
  assert c.stages.student.data.eval_split == 'validation'
  for stage in c.stages.values():
    stage.data.data_dir = root
    stage.steps, stage.log_every, stage.checkpoint_every = 2, 1, 2
    stage.eval_every, stage.wandb.mode, stage.evaluate.latency = 0, 'disabled', False
  with tfds.testing.mock_data(num_examples=16, data_dir=root):
    summary = main.run_pipeline(c, str(tmp_path / 'run'))
  assert summary['student/test_examples'] == 16
  assert np.isfinite(summary['student/test_loss'])
