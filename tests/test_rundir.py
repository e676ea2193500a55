"""The run directory as a user meets it: two processes on one directory, a
rerun with another config, files cut short by a kill, an unfinished teacher."""
import glob
import json
import logging
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

from kd import checkpoint, data, loop, main, models, runs, steps, train
from kd import config as kd_config
from tests.test_train import _run_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
  """A finished 40-step run with checkpoints at 20 and 40."""
  workdir = str(tmp_path_factory.mktemp('finished'))
  train.train_and_evaluate(_run_config(), workdir)
  return workdir


@pytest.fixture
def run_copy(finished, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(finished, workdir)
  return workdir


def _truncate_step(workdir, step):
  """What a kill during an orbax save leaves: the step's files cut short."""
  for path in glob.glob(f'{workdir}/checkpoints/{step}/**/d/*', recursive=True):
    with open(path, 'r+b') as f:
      f.truncate(os.path.getsize(path) // 2)


# The lock.


def test_second_process_is_refused_naming_the_holder(tmp_path):
  workdir = str(tmp_path / 'run')
  holder = subprocess.Popen(
      [sys.executable, '-c', 'import sys, time\nfrom kd import runs\n'
       'with runs.lock(sys.argv[1]):\n  print("held", flush=True)\n'
       '  time.sleep(120)\n', workdir],
      cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu'),
      stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == 'held'
    with pytest.raises(runs.RunLockedError,
                       match=rf'in use by pid {holder.pid} on host '):
      train.train_and_evaluate(_run_config(), workdir)
    assert os.listdir(workdir) == [runs.LOCK]  # Nothing written.
  finally:
    holder.kill()
    holder.wait()
  # Killed without releasing: the lock is stale, and taken over.
  with pytest.warns(UserWarning, match=rf'pid {holder.pid}\) is gone'):
    with runs.lock(workdir):
      held = json.load(open(os.path.join(workdir, runs.LOCK)))
      assert held['pid'] == os.getpid()
  assert not os.path.exists(os.path.join(workdir, runs.LOCK))


def test_unreadable_lock_is_refused_while_fresh_and_stale_after_a_minute(
    tmp_path):
  """An empty run.lock: its writer was killed between creating and writing
  it (or is writing it now)."""
  path = tmp_path / runs.LOCK
  path.write_text('')
  with pytest.raises(runs.RunLockedError,
                     match=rf'{path} exists but cannot be read \(written \d+ '
                     r's ago.*rerun in a minute'):
    with runs.lock(str(tmp_path)):
      pass
  assert path.read_text() == ''  # Not taken.
  old = path.stat().st_mtime - 120
  os.utime(path, (old, old))
  with pytest.warns(UserWarning, match=r'cannot be read and is 1\d\d s old'):
    with runs.lock(str(tmp_path)):
      assert json.loads(path.read_text())['pid'] == os.getpid()
  assert not path.exists()


def test_workdir_that_is_a_file_is_one_line_from_kd_main(tmp_path):
  config = tmp_path / 'c.py'
  config.write_text('from tests.test_train import _run_config\n'
                    'def get_config(arg=None):\n  return _run_config()\n')
  afile = tmp_path / 'afile'
  afile.write_text('notes')
  done = subprocess.run(
      [sys.executable, '-m', 'kd.main', f'--config={config}',
       f'--workdir={afile}'], cwd=ROOT, capture_output=True, text=True,
      timeout=300, env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu'))
  assert done.returncode == 1
  assert 'Traceback' not in done.stderr, done.stderr[-3000:]
  assert done.stderr.strip().splitlines()[-1] == (
      f'[kd.main] RunDirError: --workdir {afile} is a file (or lies under '
      'one), not a directory; pass a directory: a new one, or one kd.main '
      'wrote')
  assert afile.read_text() == 'notes'


def test_read_only_workdir_is_named_with_the_fix(run_copy, monkeypatch):
  """A read-only directory (simulated: the tests may run as root)."""
  real_open = os.open

  def read_only(path, flags, *args):
    if str(path).startswith(run_copy) and flags & os.O_CREAT:
      raise PermissionError(13, 'Permission denied', path)
    return real_open(path, flags, *args)

  monkeypatch.setattr(runs.os, 'open', read_only)
  with pytest.raises(runs.RunDirError,
                     match=rf'^{run_copy} is not writable \(Permission '
                     r'denied\): .*Use a writable --workdir'):
    train.train_and_evaluate(_run_config(), run_copy)
  monkeypatch.undo()
  assert runs.is_finished(run_copy)  # Still read as a run.


def test_lock_is_released_on_errors_and_nests_in_one_process(tmp_path):
  workdir = str(tmp_path)
  with pytest.raises(KeyError):
    with runs.lock(workdir):
      with runs.lock(workdir):  # kd.main, then train_and_evaluate.
        pass
      assert os.path.exists(os.path.join(workdir, runs.LOCK))
      raise KeyError('boom')
  assert not os.path.exists(os.path.join(workdir, runs.LOCK))


def test_other_processes_of_one_run_do_not_take_the_lock(tmp_path,
                                                         monkeypatch):
  workdir = str(tmp_path)
  with runs.lock(workdir):
    monkeypatch.setattr(runs.jax, 'process_index', lambda: 1)
    with runs.lock(workdir):  # Process 1 of the same run: not refused.
      pass
    monkeypatch.undo()
    assert os.path.exists(os.path.join(workdir, runs.LOCK))


# Config identity.


def test_rerun_with_another_config_is_refused_with_the_diff(run_copy):
  before = open(os.path.join(run_copy, 'config.json')).read()
  c = _run_config()
  c.optimizer.lr = 1e-3
  c.model.kwargs.hidden = (32,)
  with pytest.raises(runs.ConfigMismatchError) as e:
    train.train_and_evaluate(c, run_copy)
  assert 'model.kwargs.hidden: [16] -> [32]' in str(e.value)
  assert 'optimizer.lr: 0.003 -> 0.001' in str(e.value)
  assert '--overwrite' in str(e.value)
  assert open(os.path.join(run_copy, 'config.json')).read() == before
  assert not os.path.exists(os.path.join(run_copy, runs.LOCK))


def test_config_change_is_refused_by_the_checkpoints_without_config_json(
    run_copy):
  """config.json deleted (or never written) while checkpoints exist: each
  checkpoint records the config that saved it."""
  os.remove(os.path.join(run_copy, 'config.json'))
  os.remove(os.path.join(run_copy, 'summary.json'))
  c = _run_config()
  c.optimizer.lr = 1e-3
  with pytest.raises(runs.ConfigMismatchError,
                     match=r'recorded in \S+/checkpoints/40\).*\n'
                     r'  optimizer.lr: 0.003 -> 0.001\n'):
    train.train_and_evaluate(c, run_copy)
  assert not os.path.exists(os.path.join(run_copy, 'config.json'))
  assert sorted(os.listdir(os.path.join(run_copy, 'checkpoints'))) == [
      '20', '40']
  # The same config is accepted, and the run finishes where it was.
  assert train.train_and_evaluate(_run_config(), run_copy)['steps'] == 40
  assert json.load(open(os.path.join(run_copy, 'config.json')))[
      'optimizer']['lr'] == 0.003
  # Tested again at step 40, as the advice for a bad summary.json has it
  # (delete it, rerun): the final test is in metrics.jsonl once.
  rows = [json.loads(l) for l in open(os.path.join(run_copy, 'metrics.jsonl'))]
  assert [r['step'] for r in rows if 'test_accuracy' in r] == [40]
  assert [r['step'] for r in rows if 'loss' in r] == [10, 20, 30, 40]


def test_fields_that_cannot_change_results_may_change(run_copy, capsys):
  c = _run_config(log_every=5, checkpoint_every=10, keep_checkpoints=3,
                  eval_every=10)
  c.wandb.project = 'elsewhere'
  summary = train.train_and_evaluate(c, run_copy)
  assert summary['steps'] == 40 and 'already finished' in capsys.readouterr().out


def test_pipeline_rerun_with_another_temperature_is_refused(finished,
                                                            tmp_path):
  def pipeline(temperature):
    student = _run_config(steps=20)
    student.distill.teacher.update(workdir='teacher', model='mlp',
                                   kwargs={'hidden': (16,)})
    student.distill.terms.kd = kd_config.term('kd', 1.0,
                                              temperature=temperature)
    c = kd_config.pipeline_config(teacher=_run_config(), student=student)
    c.stage_dirs = {'teacher': finished}  # Finished: reused, not trained.
    return c

  workdir = str(tmp_path)
  first = main.run_pipeline(pipeline(4.0), workdir)
  assert first['student/teacher_step'] == 40
  saved = open(os.path.join(workdir, 'config.json')).read()
  with pytest.raises(runs.ConfigMismatchError,
                     match=r'stages\.student\.distill\.terms\.kd\.kwargs\.'
                     r'temperature: 4\.0 -> 20\.0'):
    main.run_pipeline(pipeline(20.0), workdir)
  assert open(os.path.join(workdir, 'config.json')).read() == saved
  # The stage directory refuses on its own too (kd.main on one stage).
  stage = pipeline(20.0).stages.student
  stage.distill.teacher.workdir = finished
  with pytest.raises(runs.ConfigMismatchError, match='temperature'):
    train.train_and_evaluate(stage, os.path.join(workdir, 'student'))


def test_overwrite_flag_deletes_the_run_and_starts_over(run_copy, tmp_path):
  config = tmp_path / 'other.py'
  config.write_text(
      'from tests.test_train import _run_config\n'
      'def get_config(arg=None):\n  return _run_config(steps=20)\n')

  def kd_main(*extra):  # As a user types it.
    return subprocess.run(
        [sys.executable, '-m', 'kd.main', f'--config={config}',
         f'--workdir={run_copy}', *extra], cwd=ROOT, capture_output=True,
        text=True, timeout=300,
        env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu'))

  with pytest.raises(runs.ConfigMismatchError, match='steps: 40 -> 20'):
    train.train_and_evaluate(_run_config(steps=20), run_copy)
  done = kd_main('--overwrite')
  assert done.returncode == 0, done.stderr[-2000:]
  assert json.load(open(os.path.join(run_copy, 'summary.json')))['steps'] == 20
  assert sorted(os.listdir(os.path.join(run_copy, 'checkpoints'))) == ['20']
  assert json.load(open(os.path.join(run_copy, 'config.json')))['steps'] == 20


def test_changed_model_is_an_architecture_mismatch_not_corruption(run_copy):
  c = _run_config()
  model = models.create('mlp', 10, hidden=(32,))
  state = steps.create_state(model, optax.adam(1e-3), jax.random.key(0),
                             np.zeros((1, 8, 8, 1), np.float32))
  with pytest.raises(checkpoint.ArchitectureMismatchError,
                     match=r"shape mismatch: \['params'\]\['dense0'\]"
                     r"\['kernel'\] model \(64, 32\) vs checkpoint \(64, 16\)"):
    loop.restore(c, run_copy, state, 'changed')
  assert sorted(os.listdir(os.path.join(run_copy, 'checkpoints'))) == [
      '20', '40']


# Files cut short.


def test_truncated_latest_checkpoint_falls_back_and_the_run_finishes(
    run_copy, caplog):
  os.remove(os.path.join(run_copy, 'summary.json'))
  _truncate_step(run_copy, 40)
  with open(os.path.join(run_copy, 'metrics.jsonl'), 'a') as f:
    f.write('{"step": 40, "lo')  # Killed while writing a line.
  with caplog.at_level(logging.WARNING), pytest.warns(
      UserWarning, match='dropping its last line'):
    summary = train.train_and_evaluate(_run_config(), run_copy)
  assert summary['steps'] == 40
  assert 'checkpoints/40 is unreadable' in caplog.text
  ckpts = sorted(os.listdir(os.path.join(run_copy, 'checkpoints')))
  assert ckpts[:2] == ['20', '40'] and ckpts[2].startswith('40.corrupt-')
  rows = [json.loads(l) for l in open(os.path.join(run_copy, 'metrics.jsonl'))]
  assert [r['step'] for r in rows if 'loss' in r] == [10, 20, 30, 40]
  # The rerun is a finished run; the new step 40 reads back.
  assert runs.load_run(run_copy)[3] == 40


def test_export_falls_back_to_the_newest_readable_checkpoint(run_copy,
                                                             caplog):
  _truncate_step(run_copy, 40)
  with caplog.at_level(logging.WARNING):
    config, _, variables, step = runs.load_run(run_copy)
  assert step == 20 and config.steps == 40
  assert 'checkpoints/40 is unreadable' in caplog.text
  assert variables['params']['dense0']['kernel'].shape == (64, 16)


def test_fallback_prints_no_event_loop_tracebacks(run_copy):
  """The reads a broken step leaves behind used to print one 'Event loop is
  closed' traceback each (a dozen or more) after the fallback's warning."""
  _truncate_step(run_copy, 40)
  done = subprocess.run(
      [sys.executable, '-c', 'import sys\nfrom kd import runs\n'
       'for _ in range(4):  # The stray reads come and go: try often.\n'
       '  print(runs.load_run(sys.argv[1])[3])', run_copy], cwd=ROOT,
      capture_output=True, text=True, timeout=300,
      env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu'))
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.split()[-1] == '20'
  assert 'checkpoints/40 is unreadable' in done.stderr
  assert 'Event loop is closed' not in done.stderr


@pytest.mark.parametrize('name,fix', [('summary.json', 'delete it'),
                                      ('config.json', '--overwrite')])
def test_corrupt_json_file_is_named_with_its_fix(run_copy, name, fix):
  path = os.path.join(run_copy, name)
  with open(path) as f:
    text = f.read()
  with open(path, 'w') as f:
    f.write(text[:len(text) // 2])
  with pytest.raises(runs.CorruptFileError) as e:
    train.train_and_evaluate(_run_config(), run_copy)
  assert path in str(e.value) and fix in str(e.value)


def test_a_bad_metrics_line_before_the_last_is_an_error(tmp_path):
  (tmp_path / 'metrics.jsonl').write_text('{"step": 1}\n{"st\n{"step": 3}\n')
  with pytest.raises(ValueError, match='metrics.jsonl line 2 is not JSON'):
    loop.MetricLogger(str(tmp_path), _run_config()).drop_after(3)


def test_keep_checkpoints_zero_is_refused_and_deletes_nothing(run_copy):
  os.remove(os.path.join(run_copy, 'summary.json'))
  with pytest.raises(ValueError, match='config.keep_checkpoints=0: must be positive'):
    train.train_and_evaluate(_run_config(keep_checkpoints=0), run_copy)
  assert sorted(os.listdir(os.path.join(run_copy, 'checkpoints'))) == [
      '20', '40']


def test_non_finite_loss_before_any_checkpoint_says_so(tmp_path, monkeypatch):
  real = data.example_batches

  def poisoned(*args, **kwargs):
    for batch in real(*args, **kwargs):
      yield dict(batch, image=np.full_like(batch['image'], np.nan))

  monkeypatch.setattr(data.input_pipeline, 'example_batches', poisoned)
  with pytest.raises(loop.NonFiniteLossError,
                     match='step 1: .*No checkpoint has been saved yet'):
    train.train_and_evaluate(_run_config(log_every=1), str(tmp_path))


# The teacher.


def _student(teacher_dir, **teacher):
  c = _run_config(steps=10)
  c.distill.teacher.update(workdir=teacher_dir, model='mlp',
                           kwargs={'hidden': (16,)}, **teacher)
  c.distill.terms.kd = kd_config.term('kd', 1.0, temperature=4.0)
  return c


def test_unfinished_teacher_is_refused_unless_allowed(run_copy, tmp_path):
  os.remove(os.path.join(run_copy, 'summary.json'))
  _truncate_step(run_copy, 40)
  with pytest.raises(runs.UnfinishedTeacherError,
                     match=r'asks for 40 steps; summary.json is missing.*'
                     r'allow_unfinished_teacher=True'):
    train.train_and_evaluate(_student(run_copy), str(tmp_path / 'a'))
  summary = train.train_and_evaluate(
      _student(run_copy, allow_unfinished_teacher=True), str(tmp_path / 'b'))
  assert summary['teacher_step'] == 20  # Step 40 is unreadable.


def test_missing_teacher_directory_is_named_and_not_created(tmp_path):
  missing = str(tmp_path / 'no_teacher')
  with pytest.raises(FileNotFoundError,
                     match=rf'{missing} does not exist; train the teacher'):
    train.train_and_evaluate(_student(missing), str(tmp_path / 's'))
  assert not os.path.exists(missing)
  assert not os.path.exists(tmp_path / 's' / 'config.json')


def test_config_diff_paths_defaults_and_directories():
  old = {'steps': 10, 'init_from': 'runs/a', 'log_every': 1,
         'stages': {'s': {'optimizer': {'lr': 0.1}, 'wandb': {'mode': 'x'}}}}
  new = {'steps': 20, 'init_from': os.path.abspath('runs/a'), 'log_every': 5,
         'stages': {'s': {'optimizer': {'lr': 0.2}, 'wandb': {'mode': 'y'}}},
         'label_smoothing': 0.0, 'mixup_alpha': 0.5}
  assert runs.config_diff(old, new) == [
      'mixup_alpha: 0.0 -> 0.5',  # Absent before: its default, 0.0.
      'stages.s.optimizer.lr: 0.1 -> 0.2', 'steps: 10 -> 20']


# Checked before the first step; what may change on a rerun.


def _pipeline(loss='kd', student_output='logits'):
  student = _run_config(steps=10)
  student.distill.teacher.update(workdir='teacher', model='mlp',
                                 kwargs={'hidden': (16,)})
  student.distill.terms.kd = kd_config.term(loss, 1.0, temperature=4.0,
                                            student=student_output)
  return kd_config.pipeline_config(teacher=_run_config(steps=20),
                                   student=student)


def test_pipeline_typo_in_a_later_stage_fails_before_the_first(tmp_path):
  workdir = str(tmp_path / 'p')
  with pytest.raises(ValueError, match=r"config\.stages\.student\.distill\."
                     r"terms\.kd\.loss='kdd': unknown loss; valid: .*\bkd\b"):
    main.run_pipeline(_pipeline(loss='kdd'), workdir)
  assert not os.path.exists(workdir)  # The teacher did not train.


def test_pipeline_stage_that_never_started_may_change(tmp_path):
  """The student stage fails after the teacher trained (an output the
  student lacks); the fixed rerun reuses the teacher."""
  workdir = str(tmp_path / 'p')
  with pytest.raises(ValueError, match="asks for student output 'nope'"):
    main.run_pipeline(_pipeline(student_output='nope'), workdir)
  assert runs.is_finished(os.path.join(workdir, 'teacher'))
  assert not runs.started(os.path.join(workdir, 'student'))
  summary = main.run_pipeline(_pipeline(), workdir)
  assert summary['student/steps'] == 10 and summary['teacher/steps'] == 20
  assert json.load(open(os.path.join(workdir, 'config.json')))['stages'][
      'student']['distill']['terms']['kd']['student'] == 'logits'
  # Rerun when all is done (as after a kill while kd.main plotted): the
  # pipeline's time stays that of the run that trained it.
  again = main.run_pipeline(_pipeline(), workdir)
  assert again['wall_seconds'] == summary['wall_seconds']
  # A stage that ran may not change.
  with pytest.raises(runs.ConfigMismatchError,
                     match=r'stages\.student\.distill\.terms\.kd\.student: '
                     r'"logits" -> "nope"'):
    main.run_pipeline(_pipeline(student_output='nope'), workdir)


@pytest.mark.parametrize('split,message', [
    ('validation', r"config\.data\.eval_split='validation': kd_digits has no "
     r'such split; set --config\.data\.eval_split to one of test, train'),
    ('test[:0]', r"config\.data\.eval_split='test\[:0\]': that part of "
     'kd_digits holds no examples'),
])
def test_bad_eval_split_fails_before_the_first_step(tmp_path, split, message):
  c = _run_config()
  c.data.eval_split = split
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(c, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')


def test_unfinished_run_may_change_its_eval_split_with_a_warning(run_copy):
  c = _run_config()
  c.data.eval_split = 'test[:50%]'
  with pytest.raises(runs.ConfigMismatchError, match='data.eval_split'):
    train.train_and_evaluate(c, run_copy)  # Finished: its figures are old.
  os.remove(os.path.join(run_copy, 'summary.json'))
  with pytest.warns(UserWarning, match=r'only its tests \(data\.eval_split: '
                    r'"test" -> "test\[:50%\]"\)'):
    summary = train.train_and_evaluate(c, run_copy)
  rows = [json.loads(l) for l in open(os.path.join(run_copy, 'metrics.jsonl'))]
  final = [r for r in rows if 'test_accuracy' in r]
  assert len(final) == 1 and final[0]['test_accuracy'] == summary[
      'test_accuracy']
  assert json.load(open(os.path.join(run_copy, 'config.json')))['data'][
      'eval_split'] == 'test[:50%]'
