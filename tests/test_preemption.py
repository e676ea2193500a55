"""SIGTERM checkpoints and exits; the same command resumes to the same end."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np

import orbax.checkpoint as ocp

from kd import checkpoint, data, runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = '''
from kd.config import run_config

def get_config(arg=None):
  c = run_config()
  c.data.name, c.data.augment = 'kd_digits', True
  c.model.name, c.model.kwargs.hidden = 'mlp', (32,)
  c.batch_size, c.steps, c.log_every, c.checkpoint_every = 32, 600, 10, 200
  c.wandb.mode, c.evaluate.latency = 'disabled', False
  return c
'''


def _start(config, workdir):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  return subprocess.Popen(
      [sys.executable, '-m', 'kd.main', f'--config={config}',
       f'--workdir={workdir}'], cwd=ROOT, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True)


def _interrupted(config, workdir, sig):
  """A run sent `sig` once its metrics have three rows (mid-training);
  returns its output and its finished process."""
  proc = _start(config, workdir)
  metrics = workdir / 'metrics.jsonl'
  deadline = time.time() + 120
  while time.time() < deadline and proc.poll() is None:
    if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
      break
    time.sleep(0.05)
  proc.send_signal(sig)
  out, _ = proc.communicate(timeout=120)
  return out, proc


def _params(workdir):
  mngr = checkpoint.manager(os.path.join(workdir, 'checkpoints'))
  step = mngr.latest_step()
  params = mngr.restore(step, args=ocp.args.StandardRestore())['params']
  mngr.close()
  return step, params


def test_sigterm_saves_and_the_rerun_ends_identical(tmp_path):
  config = tmp_path / 'tiny.py'
  config.write_text(CONFIG)
  full, cut = tmp_path / 'full', tmp_path / 'cut'
  data.builder('kd_digits')  # Prepared once, not raced by two processes.
  reference = _start(config, full)

  out, proc = _interrupted(config, cut, signal.SIGTERM)
  assert proc.returncode == 143, out[-2000:]
  assert 'SIGTERM: saved step' in out
  saved_step, _ = _params(cut)
  assert 30 <= saved_step < 600
  assert not (cut / 'summary.json').exists()

  rerun = _start(config, cut)
  out, _ = rerun.communicate(timeout=300)
  assert rerun.returncode == 0, out[-2000:]
  assert f'resuming from step {saved_step}' in out
  reference.communicate(timeout=300)
  assert reference.returncode == 0

  (s1, p1), (s2, p2) = _params(full), _params(cut)
  assert s1 == s2 == 600
  # The first training row after the resume averages only the steps after
  # it, and says so.
  rows = [json.loads(l) for l in (cut / 'metrics.jsonl').read_text().splitlines()]
  marked = [r for r in rows if 'resumed_at' in r]
  first_after = min(r['step'] for r in rows if r['step'] > saved_step)
  assert [(r['step'], r['resumed_at']) for r in marked] == (
      [(first_after, saved_step)] if saved_step % 10 else [])
  jax.tree.map(np.testing.assert_array_equal, p1, p2)


def test_sigterm_to_one_process_saves_the_same_step_on_every_process(
    tmp_path):
  """Two processes (jax.distributed): SIGTERM reaches process 1 only, yet
  both stop at the same step and save it together."""
  config = tmp_path / 'tiny.py'
  config.write_text(CONFIG.replace(
      '  return c', "  c.data.process_split = 'slice'\n  return c"))
  data.builder('kd_digits')
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  procs = [subprocess.Popen(
      [sys.executable, '-m', 'kd.main', f'--config={config}',
       f'--workdir={tmp_path / "cut"}'], cwd=ROOT,
      env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu',
               XLA_FLAGS=os.environ.get('XLA_FLAGS', '')
               + ' --xla_force_host_platform_device_count=1',
               KD_COORDINATOR=f'127.0.0.1:{port}', KD_NUM_PROCESSES='2',
               KD_PROCESS_ID=str(i)),
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  metrics = tmp_path / 'cut' / 'metrics.jsonl'
  deadline = time.time() + 120
  while time.time() < deadline and procs[1].poll() is None:
    if metrics.exists() and metrics.read_text():
      break
    time.sleep(0.05)
  procs[1].send_signal(signal.SIGTERM)
  outs = [p.communicate(timeout=120)[0] for p in procs]
  assert [p.returncode for p in procs] == [143, 143], outs[0][-2000:]
  saved = [re.findall(r'SIGTERM: saved step (\d+)', out) for out in outs]
  assert saved[0] == saved[1] and len(saved[0]) == 1, outs
  step, _ = _params(tmp_path / 'cut')
  assert step == int(saved[0][0]) < 600


def test_ctrl_c_saves_the_step_and_exits_with_one_line(tmp_path):
  """SIGINT (Ctrl-C) inside the training steps: the step it arrived at is
  saved (not only the last `checkpoint_every` one), in one line."""
  config = tmp_path / 'tiny.py'
  config.write_text(CONFIG)
  cut = tmp_path / 'cut'
  out, proc = _interrupted(config, cut, signal.SIGINT)
  assert proc.returncode == 130, out[-2000:]
  assert 'Traceback' not in out and 'KeyboardInterrupt' not in out, out
  saved = re.findall(r'\[train\] SIGINT: saved step (\d+); rerun the same '
                     'command to resume\n', out)
  step, _ = _params(cut)
  assert saved == [str(step)] and 30 <= step < 200  # Before checkpoint_every.
  assert not (cut / runs.LOCK).exists()
