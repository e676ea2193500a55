"""Every method of the CIFAR-100 benchmark config runs on mock CIFAR-100."""
import json
import os

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs.cifar100 import distill
from kd import main, runs
from tests import run_checks
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


def _config(method):
  return distill.get_config(f'teacher={TEACHER},student={STUDENT},'
                            f'method={method}')


# AB, FSP and FT first train an 'init' stage; the others distil in the
# student stage alone.
WITH_INIT = sorted(m for m in distill.METHODS if 'init' in _config(m).stages)
ALONE = sorted(set(distill.METHODS) - set(WITH_INIT))


def _run_and_check(c, mock_cifar, teacher_dir, tmp_path):
  """Runs `c`'s init (if any) and student stages for 3 steps on the tiny
  models: every term logs finite values at every step, each stage moves the
  student, the summary's accuracy is the checkpoint's."""
  stages = [r for r in ('init', 'student') if r in c.stages]
  for run in stages:
    stage = c.stages[run]
    _small(stage, mock_cifar)
    stage.distill.teacher.workdir = teacher_dir
    for t in stage.distill.terms.values():
      if t.adapter == 'crd':
        t.adapter_kwargs.num_negatives = 16
  with c.unlocked():
    c.stage_order = tuple(stages)
  summary = main.run_pipeline(c, str(tmp_path))
  for run in stages:
    rows = [r for r in map(json.loads, open(tmp_path / run / 'metrics.jsonl'))
            if 'loss' in r]
    assert len(rows) == 3
    for name in c.stages[run].distill.terms:
      assert all(np.isfinite(r[name]) for r in rows), name
  # The student moved from where it started: its seed's initialisation, or
  # the init stage's result (itself moved from its seed's).
  student_dir = str(tmp_path / 'student')
  final = run_checks.final_state(student_dir, 3)['params']
  if 'init' in stages:
    init_dir = str(tmp_path / 'init')
    run_checks.assert_moved(run_checks.initial_params(init_dir),
                            run_checks.final_state(init_dir, 3)['params'],
                            'init', every=False)
    start = run_checks.final_state(init_dir, 3)['params']
  else:
    start = run_checks.initial_params(student_dir)
  run_checks.assert_moved(start, final, 'student')
  # The reported accuracy is the checkpoint's on the test split.
  config, model, variables, _ = runs.load_run(student_dir)
  apply = jax.jit(lambda x: {'student': model.apply(variables, x,
                                                    train=False)[0]})
  run_checks.assert_accuracies(summary, run_checks.accuracies(config, apply))
  run_checks.assert_logged(student_dir, runs.summary(student_dir),
                           ('test_accuracy',))


def test_methods_with_an_init_stage_are_the_three():
  assert WITH_INIT == ['ab', 'fsp', 'ft']
  assert all(not _config(m).stages.student.init_from for m in ALONE)


@pytest.mark.parametrize('method', WITH_INIT)
def test_method_runs_a_few_steps(method, mock_cifar, teacher_dir, tmp_path):
  _run_and_check(_config(method), mock_cifar, teacher_dir, tmp_path)


def test_methods_without_init_run_a_few_steps_side_by_side(
    mock_cifar, teacher_dir, tmp_path):
  """The terms of every method without an init stage, each as its method's
  config makes it (loss, features, adapter, weight, arguments), in one
  student: one compiled step for the 18 methods instead of one each. Each
  term is logged under '<method>_<term>'."""
  c = _config('kd')
  terms = {}
  for method in ALONE:
    for name, t in _config(method).stages.student.distill.terms.items():
      terms[f'{method}_{name}'] = t
  assert len(terms) == sum(len(distill.METHODS[m][1]) for m in ALONE)
  c.stages.student.distill.terms = ml_collections.ConfigDict(terms)
  # Their weights add up (up to 3e4 each): at the recipe's rate the sum
  # overflows by step 2.
  c.stages.student.optimizer.lr = 1e-4
  _run_and_check(c, mock_cifar, teacher_dir, tmp_path)


def test_init_stage_hands_its_student_and_adapters_on(mock_cifar, teacher_dir,
                                                      tmp_path):
  c = distill.get_config(f'teacher={TEACHER},student={STUDENT},method=ft')
  assert c.stages.init.distill.ce_weight == 0.0
  for run in ('init', 'student'):
    _small(c.stages[run], mock_cifar)
    c.stages[run].distill.teacher.workdir = teacher_dir
    c.stages[run].steps = 2
  # Too small a step to change any float32 value: step 1 shows the start.
  c.stages.student.optimizer.lr = 1e-30
  with c.unlocked():
    c.stage_order = ('init', 'student')
  main.run_pipeline(c, str(tmp_path))
  init = runs.latest_state(str(tmp_path / 'init'), 'init')[0]
  student = runs.latest_state(str(tmp_path / 'student'), 'student')[0]
  # (Zero-initialised biases move by about lr = 1e-30, nothing else does.)
  same = lambda a, b: jax.tree.map(
      lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-25),
      a, b)
  same(init['params'], student['params'])
  same(init['aux_params']['ft'], student['aux_params']['ft'])
  # The paraphraser trained in the init stage (the translator did not).
  fresh = distill.get_config(f'teacher={TEACHER},student={STUDENT},method=ft')
  assert fresh.stages.student.init_from == 'init'
  c.stages.student.init_from = ''  # A run without the init stage differs.
  with c.unlocked():
    c.stage_order = ('student',)
  other = tmp_path / 'cold'
  main.run_pipeline(c, str(other))
  cold = runs.latest_state(str(other / 'student'), 'student')[0]
  para = lambda t: t['aux_params']['ft']['params']['paraphraser']
  assert not np.allclose(para(cold)['decoder0']['kernel'],
                         para(student)['decoder0']['kernel'])


def test_imagenet_pair_smoke_on_mock_data(tmp_path):
  from configs.imagenet import distill as imagenet  # pylint: disable=import-outside-toplevel
  root = metadata_dir(str(tmp_path / 'tfds'),
                      {'imagenet2012': ('train', 'validation')}, 16)
  # A tiny CNN teacher (test_vit's ImageNet smoke test has one too): the
  # ResNet-18 student is the ImageNet path under test, one block a stage
  # (half the compile).
  c = imagenet.get_config('teacher=cnn,student=resnet18_imagenet,'
                          'method=kd,batch=8,epochs=1,image_size=32')
  assert c.stages.student.data.eval_split == 'validation'
  c.stages.teacher.model.kwargs = {'channels': (4, 8), 'dense': 16}
  c.stages.student.distill.teacher.kwargs = {'channels': (4, 8), 'dense': 16}
  c.stages.student.model.kwargs.blocks = (1, 1, 1, 1)
  for stage in c.stages.values():
    stage.data.data_dir = root
    stage.steps, stage.log_every, stage.checkpoint_every = 2, 1, 2
    stage.eval_every, stage.wandb.mode, stage.evaluate.latency = 0, 'disabled', False
  with tfds.testing.mock_data(num_examples=16, data_dir=root):
    summary = main.run_pipeline(c, str(tmp_path / 'run'))
  assert summary['student/test_examples'] == 16
  assert np.isfinite(summary['student/test_loss'])
