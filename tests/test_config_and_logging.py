"""Config files and flags, metrics files, wandb fallback, progress lines."""
import glob
import io
import json

import pytest
from absl import flags
from ml_collections import config_flags

from kd import config as kd_config
from kd import logger


def _parse(argv):
  fv = flags.FlagValues()
  # Override flags are found in sys_argv when the flag is defined.
  config_flags.DEFINE_config_file('config', None, 'cfg', flag_values=fv,
                                  lock_config=True, sys_argv=['prog'] + argv)
  fv(['prog'] + argv)
  return fv.config


def test_quickstart_config_overrides_are_type_checked_and_locked():
  c = _parse(['--config=configs/quickstart.py',
              '--config.stages.student_kd.distill.terms.kd.kwargs.temperature=8'])
  assert c.stage_order == ('teacher', 'student_scratch', 'student_kd')
  assert c.stages.student_kd.distill.terms.kd.kwargs.temperature == 8.0
  assert c.stages.student_kd.distill.teacher.workdir == 'teacher'
  with pytest.raises(AttributeError, match='Did you mean "steps"'):
    _parse(['--config=configs/quickstart.py',
            '--config.stages.teacher.stepz=10'])
  with pytest.raises(flags.IllegalFlagValueError):
    _parse(['--config=configs/quickstart.py',
            '--config.stages.teacher.steps=ten'])


def test_metrics_are_json_lines_and_resume_drops_rows_after_checkpoint(
    tmp_path):
  c = kd_config.run_config()
  c.wandb.mode = 'disabled'
  log = logger.MetricLogger(str(tmp_path), c, process_index=0)
  for step in (10, 20, 30):
    log.write(step, {'loss': 1.0 / step})
  log.drop_after(20)
  rows = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl')]
  assert rows == [{'step': 10, 'loss': 0.1}, {'step': 20, 'loss': 0.05}]


def test_only_process_zero_writes(tmp_path):
  c = kd_config.run_config()
  log = logger.MetricLogger(str(tmp_path), c, process_index=1)
  log.write(1, {'loss': 1.0})
  assert not (tmp_path / 'metrics.jsonl').exists()


def test_wandb_offline_run_is_written_to_the_workdir(tmp_path):
  c = kd_config.run_config()
  c.wandb.mode = 'offline'
  log = logger.MetricLogger(str(tmp_path), c, process_index=0)
  log.write(1, {'loss': 0.5})
  log.close()
  assert glob.glob(str(tmp_path / 'wandb' / 'offline-run-*' / 'run-*.wandb'))


def test_wandb_failure_warns_and_training_logs_go_on(tmp_path, monkeypatch):
  import wandb  # pylint: disable=import-outside-toplevel

  def broken(**kwargs):
    raise RuntimeError('no network')

  monkeypatch.setattr(wandb, 'init', broken)
  c = kd_config.run_config()
  c.wandb.mode = 'online'
  with pytest.warns(UserWarning, match='wandb could not start.*no network'):
    log = logger.MetricLogger(str(tmp_path), c, process_index=0)
  log.write(3, {'loss': 2.0})
  assert json.loads(open(tmp_path / 'metrics.jsonl').read())['loss'] == 2.0


def test_bad_wandb_mode_is_rejected(tmp_path):
  c = kd_config.run_config()
  c.wandb.mode = 'onlin'
  with pytest.raises(ValueError, match="'onlin'.*offline"):
    logger.MetricLogger(str(tmp_path), c, process_index=0)


def test_progress_line_has_step_loss_rate_and_eta():
  out = io.StringIO()
  p = logger.Progress('teacher', total_steps=100, start_step=0, batch_size=10,
                      stream=out)
  p.line(50, {'loss': 0.25, 'ce': 0.2}, rate=100.0)
  line = out.getvalue()
  assert '[teacher] step 50/100' in line and 'loss 0.2500' in line
  assert '100 ex/s' in line and 'ETA 5s' in line


def test_progress_eta_covers_later_stages_at_a_smoothed_step_time(
    monkeypatch):
  now = [0.0]
  monkeypatch.setattr(logger.time, 'perf_counter', lambda: now[0])
  out = io.StringIO()
  p = logger.Progress('teacher', total_steps=100, start_step=0, batch_size=10,
                      later_steps=200, stream=out, smoothing=0.5)
  p.compiling(1)
  now[0] = 7.0  # The first step, compilation included.
  p.compiled()
  now[0] = 7.0 + 9 * 0.1
  assert p.rate(10) == pytest.approx(10 * 9 / 0.9)  # Compilation excluded.
  now[0] += 10 * 0.3
  p.rate(20)
  # Moving average of 0.1 s and 0.3 s per step: 0.2 s; 80 + 200 steps left.
  assert p.step_seconds == pytest.approx(0.2)
  assert p.eta(20, rate=1.0) == pytest.approx(280 * 0.2)
  p.line(20, {'loss': 1.0}, rate=33.3)
  lines = out.getvalue().splitlines()
  assert lines[0] == '[teacher] compiling the step (step 1/100) ...'
  assert lines[1] == '[teacher] compiled and ran the first step in 7.0s'
  assert lines[2].endswith('ETA (pipeline) 56s')


class _Recorder:
  """Stands in for the wandb module and keeps what would be sent."""

  def __init__(self):
    self.inits, self.logs, self.summaries, self.finished = [], [], [], 0

  def Settings(self, **kw):  # pylint: disable=invalid-name
    return kw

  def init(self, **kw):
    self.inits.append(kw)
    rec = self

    class Run:
      summary = type('S', (), {'update': lambda _, v: rec.summaries.append(v)})()

      def log(self, row, step):
        rec.logs.append((step, row))

      def finish(self):
        rec.finished += 1

    return Run()


def test_what_wandb_would_receive(tmp_path):
  from kd import main  # pylint: disable=import-outside-toplevel
  from configs import quickstart  # pylint: disable=import-outside-toplevel
  c = quickstart.get_config()
  main.apply_wandb_flags(c, 'sweep-a', ['mnist1d', 'kd'])
  stage = c.stages.student_kd
  assert stage.wandb.group == 'sweep-a' and stage.wandb.tags == ('mnist1d', 'kd')
  rec = _Recorder()
  log = logger.MetricLogger(str(tmp_path), stage, process_index=0, backend=rec)
  log.write(10, {'loss': 0.5})
  log.summary({'test_accuracy': 0.9})
  log.close()
  (init,) = rec.inits
  assert init['mode'] == 'offline' and init['group'] == 'sweep-a'
  assert init['tags'] == ['mnist1d', 'kd'] and init['dir'] == str(tmp_path)
  assert init['config']['distill']['terms']['kd']['loss'] == 'kd'
  assert rec.logs == [(10, {'step': 10, 'loss': 0.5})]
  assert rec.summaries == [{'test_accuracy': 0.9}] and rec.finished == 1
  other = _Recorder()
  logger.MetricLogger(str(tmp_path), stage, process_index=1, backend=other)
  assert other.inits == []  # Only process 0 logs.


def test_wandb_lists_the_packages_once_a_process(tmp_path, monkeypatch):
  # Runs trained together share a process: the list (0.25-0.5 s) goes with
  # the first run only.
  monkeypatch.setattr(logger, '_packages_listed', False)
  from configs import quickstart  # pylint: disable=import-outside-toplevel
  stage = quickstart.get_config().stages.student_kd
  rec = _Recorder()
  for r in range(3):
    logger.MetricLogger(str(tmp_path / f'r{r}'), stage, process_index=0,
                        backend=rec).close()
  assert [i['settings']['x_save_requirements'] for i in rec.inits] == [
      True, False, False]
  assert all(i['settings']['silent'] for i in rec.inits)
