"""The trainer end to end on the real digits: resume, errors, the pipeline."""
import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from kd import checkpoint, config as kd_config, data, loop, main, report, runs, train
from kd.data import select
from tests import run_checks


def _run_config(**overrides):
  c = kd_config.run_config()
  c.data.name = 'kd_digits'
  c.data.augment = False
  c.model.name = 'mlp'
  c.model.kwargs.hidden = (16,)
  c.batch_size = 32
  c.steps = 40
  c.log_every = 10
  c.checkpoint_every = 20
  c.optimizer.lr = 3e-3
  c.wandb.mode = 'disabled'
  c.evaluate.latency = False
  for k, v in overrides.items():
    c[k] = v
  return c


def _params(workdir):
  mngr = checkpoint.manager(os.path.join(workdir, 'checkpoints'))
  restored = mngr.restore(mngr.latest_step(),
                          args=ocp.args.StandardRestore())
  mngr.close()
  return restored['params']


def _interrupt_after(monkeypatch, n_batches):
  real = data.example_batches

  def flaky(*args, **kwargs):
    it = real(*args, **kwargs)
    for _ in range(n_batches):
      yield next(it)
    raise KeyboardInterrupt('simulated interruption')

  monkeypatch.setattr(data.input_pipeline, 'example_batches', flaky)


@pytest.fixture(scope='module')
def teacher_dir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('teacher'))
  c = _run_config(steps=60)
  c.model.name, c.model.kwargs = 'cnn', {'channels': (8,), 'dense': 16}
  train.train_and_evaluate(c, workdir)
  return workdir


def test_interrupted_run_resumes_to_identical_parameters(tmp_path,
                                                         monkeypatch):
  full = str(tmp_path / 'full')
  train.train_and_evaluate(_run_config(), full)

  resumed = str(tmp_path / 'resumed')
  _interrupt_after(monkeypatch, 25)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(_run_config(), resumed)
  assert checkpoint.manager(os.path.join(resumed, 'checkpoints')).latest_step() == 20
  monkeypatch.undo()
  summary = train.train_and_evaluate(_run_config(), resumed)

  assert summary['steps'] == 40
  jax.tree.map(np.testing.assert_array_equal, _params(full), _params(resumed))
  rows = [json.loads(l) for l in open(os.path.join(resumed, 'metrics.jsonl'))]
  train_rows = [r for r in rows if 'loss' in r]
  assert [r['step'] for r in train_rows] == [10, 20, 30, 40]
  assert {'loss', 'ce', 'learning_rate', 'examples_per_sec'} <= train_rows[-1].keys()
  assert rows[-1]['step'] == 40 and rows[-1]['test_accuracy'] == summary[
      'test_accuracy'] == summary['best_test_accuracy']


def test_finished_run_is_not_trained_again(tmp_path, capsys):
  workdir = str(tmp_path)
  first = train.train_and_evaluate(_run_config(steps=10), workdir)
  second = train.train_and_evaluate(_run_config(steps=10), workdir)
  assert first == second
  assert 'already finished' in capsys.readouterr().out


def test_distilled_student_reports_teacher_statistics(tmp_path, teacher_dir):
  c = _run_config()
  c.distill.teacher.update(workdir=teacher_dir, model='cnn',
                           kwargs={'channels': (8,), 'dense': 16})
  c.distill.terms.kd = kd_config.term('kd', 0.5, temperature=4.0)
  summary = train.train_and_evaluate(c, str(tmp_path))
  assert summary['params'] == 64 * 16 + 16 + 16 * 10 + 10
  assert 0.3 < summary['test_accuracy'] <= 1.0
  rows = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl')]
  assert 'kd' in rows[-2] and 'ce' in rows[-2]
  run_checks.assert_run_moved(str(tmp_path), 40)
  train_rows = [r for r in rows if 'kd' in r]
  assert train_rows[-1]['kd'] < train_rows[0]['kd']  # The student learnt.
  # Agreement and KL(teacher || student), recomputed from both checkpoints.
  want = _teacher_stats(c, str(tmp_path), teacher_dir)
  for key, value in want.items():
    np.testing.assert_allclose(summary[key], value, rtol=1e-4, atol=1e-6,
                               err_msg=key)


def _teacher_stats(config, student_dir, teacher_dir) -> dict:
  """The student's test accuracy, its top-1 agreement with the teacher and
  mean KL(teacher || student) over the test split, in numpy."""
  _, student, s_vars, _ = runs.load_run(student_dir)
  _, teacher, t_vars, _ = runs.load_run(teacher_dir)
  s_fn = jax.jit(lambda x: student.apply(s_vars, x, train=False)[0])
  t_fn = jax.jit(lambda x: teacher.apply(t_vars, x, train=False)[0])
  log_softmax = lambda z: z - np.log(np.sum(np.exp(
      z - z.max(-1, keepdims=True)), -1, keepdims=True)) - z.max(
          -1, keepdims=True)
  sums = {'test_accuracy': 0.0, 'teacher_agreement': 0.0,
          'kl_to_teacher': 0.0}
  count = 0.0
  for batch in select.eval_batches(config):
    mask = np.asarray(batch['mask'], np.float64)
    s_log = log_softmax(np.asarray(s_fn(batch['image']), np.float64))
    t_log = log_softmax(np.asarray(t_fn(batch['image']), np.float64))
    count += mask.sum()
    sums['test_accuracy'] += np.sum(
        mask * (s_log.argmax(-1) == np.asarray(batch['label'])))
    sums['teacher_agreement'] += np.sum(
        mask * (s_log.argmax(-1) == t_log.argmax(-1)))
    sums['kl_to_teacher'] += np.sum(
        mask * np.sum(np.exp(t_log) * (t_log - s_log), -1))
  return {k: v / count for k, v in sums.items()}


def test_teacher_architecture_mismatch_names_the_parameters(tmp_path,
                                                            teacher_dir):
  c = _run_config()
  c.distill.teacher.update(workdir=teacher_dir, model='cnn',
                           kwargs={'channels': (8,), 'dense': 32})
  c.distill.terms.kd = kd_config.term('kd', 1.0, temperature=4.0)
  with pytest.raises(checkpoint.ArchitectureMismatchError,
                     match=r"shape mismatch: \['params'\]\['dense'\]\['kernel'\]"):
    train.train_and_evaluate(c, str(tmp_path))


def test_unknown_loss_is_rejected_before_training(tmp_path, teacher_dir):
  c = _run_config()
  c.distill.teacher.update(workdir=teacher_dir, model='cnn',
                           kwargs={'channels': (8,), 'dense': 16})
  c.distill.terms.bogus = kd_config.term('kullback', 1.0)
  with pytest.raises(kd_config.ConfigError,
                     match=r"config.distill.terms.bogus.loss='kullback': "
                     r"unknown loss; valid: .*\bkd\b"):
    train.train_and_evaluate(c, str(tmp_path))
  assert not os.path.exists(tmp_path / 'metrics.jsonl')


def test_unknown_feature_lists_the_available_ones(tmp_path, teacher_dir):
  c = _run_config()
  c.distill.teacher.update(workdir=teacher_dir, model='cnn',
                           kwargs={'channels': (8,), 'dense': 16})
  c.distill.terms.hint = kd_config.term('hint', 1.0, student='stage3',
                                        teacher='embedding')
  with pytest.raises(ValueError, match=r"student output 'stage3'.*embedding"):
    train.train_and_evaluate(c, str(tmp_path))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path,
                                                              monkeypatch):
  real = data.example_batches

  def poisoned(*args, **kwargs):
    for i, batch in enumerate(real(*args, **kwargs)):
      if i >= 25:
        batch = dict(batch, image=np.full_like(batch['image'], np.nan))
      yield batch

  monkeypatch.setattr(data.input_pipeline, 'example_batches', poisoned)
  with pytest.raises(loop.NonFiniteLossError, match='step 26'):
    train.train_and_evaluate(_run_config(log_every=1), str(tmp_path))
  mngr = checkpoint.manager(str(tmp_path / 'checkpoints'))
  assert mngr.latest_step() == 20
  assert np.all(np.isfinite(np.concatenate(
      [np.ravel(x) for x in jax.tree.leaves(_params(str(tmp_path)))])))


def test_quickstart_pipeline_end_to_end(tmp_path):
  from configs import quickstart  # pylint: disable=import-outside-toplevel
  c = quickstart.get_config()
  for stage in c.stages.values():
    stage.steps, stage.checkpoint_every, stage.log_every = 30, 30, 10
    stage.wandb.mode = 'disabled'
    stage.evaluate.latency = False
  summary = main.run_pipeline(c, str(tmp_path))
  on_disk = json.load(open(tmp_path / 'summary.json'))
  assert on_disk == summary
  for key in ('teacher/test_accuracy', 'student_scratch/test_accuracy',
              'student_kd/test_accuracy', 'student_kd/teacher_agreement',
              'student_kd/tflite_float32_accuracy',
              'student_kd/tflite_int8_accuracy'):
    assert isinstance(summary[key], float), key
  stage_dir = lambda stage: str(tmp_path / stage)
  for stage in ('teacher', 'student_scratch', 'student_kd'):
    run_checks.assert_run_moved(stage_dir(stage), 30)
    stage_summary = runs.summary(stage_dir(stage))
    run_checks.assert_logged(stage_dir(stage), stage_summary,
                             ('test_accuracy',), ('loss',), log_every=10)
    assert summary[f'{stage}/test_accuracy'] == stage_summary['test_accuracy']
  # Thirty steps lift the models trained on labels alone well above chance
  # (0.1) on MNIST-1D (0.38 and 0.32 with this seed).
  assert summary['teacher/test_accuracy'] > 0.2
  assert summary['student_scratch/test_accuracy'] > 0.2
  want = _teacher_stats(c.stages.student_kd, stage_dir('student_kd'),
                        stage_dir('teacher'))
  for key, value in want.items():
    np.testing.assert_allclose(summary[f'student_kd/{key}'], value,
                               rtol=1e-4, atol=1e-6, err_msg=key)
  # The float TFLite model scores as the checkpoint but where they disagree.
  agreement = summary['student_kd/tflite_float32_agreement_with_jax']
  assert agreement > 0.99
  assert abs(summary['student_kd/tflite_float32_accuracy'] -
             summary['student_kd/test_accuracy']) <= 1 - agreement + 1e-9
  # MLP 100-100 on 40 samples, 10 classes: (40+1)100 + (100+1)100 + (100+1)10.
  assert summary['student_kd/params'] == 41 * 100 + 101 * 100 + 101 * 10
  assert summary['teacher/params'] == 52_874  # cnn1d, as in the README.
  # int8 weights: under half the float32 file (a quarter plus the graph).
  assert summary['student_kd/tflite_int8_bytes'] < summary[
      'student_kd/tflite_float32_bytes'] / 2
  assert summary['student_kd/tflite_float32_max_abs_logit_diff'] < 1e-4
  for stage in ('teacher', 'student_scratch', 'student_kd'):
    assert {'config.json', 'metrics.jsonl', 'summary.json', 'checkpoints'} <= set(
        os.listdir(tmp_path / stage))
  # The plot's held-out curves end at the summary's accuracies.
  held_out = report.curves({n: stage_dir(n) for n in c.stage_order})['held_out']
  assert {n: v[-1] for n, (_, v) in held_out.items()} == {
      n: summary[f'{n}/test_accuracy'] for n in c.stage_order}
  for fmt in ('float32', 'int8'):  # The summary's sizes are the files'.
    assert os.path.getsize(tmp_path / 'student_kd' / f'student_{fmt}.tflite') \
        == summary[f'student_kd/tflite_{fmt}_bytes']


def test_periodic_evaluation_records_best_and_last(tmp_path):
  summary = train.train_and_evaluate(_run_config(eval_every=10), str(tmp_path))
  rows = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl')]
  tested = [r for r in rows if 'test_accuracy' in r]
  assert [r['step'] for r in tested] == [10, 20, 30, 40]
  best = max(tested, key=lambda r: r['test_accuracy'])
  assert summary['best_test_accuracy'] == best['test_accuracy']
  assert summary['best_test_step'] == best['step']
  assert summary['test_accuracy'] == tested[-1]['test_accuracy']


def test_feature_shapes_the_loss_cannot_pair_fail_before_training(
    tmp_path, teacher_dir):
  c = _run_config()
  c.distill.teacher.update(workdir=teacher_dir, model='cnn',
                           kwargs={'channels': (8,), 'dense': 16})
  c.distill.terms.at = kd_config.term('attention_transfer', 1.0,
                                      student='hidden0', teacher='stage0')
  with pytest.raises(ValueError, match=r"loss 'attention_transfer' cannot "
                     r"pair student \(1, 16\) with teacher \(1, 8, 8, 8\)"):
    train.train_and_evaluate(c, str(tmp_path))
  assert not os.path.exists(tmp_path / 'metrics.jsonl')
