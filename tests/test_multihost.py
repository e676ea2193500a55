"""2 processes x 2 CPU devices (jax.distributed, gloo) vs 1 process x 4."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from kd import data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = '''
from kd.config import run_config

def get_config(arg):
  c = run_config()
  c.data.name, c.data.augment, c.data.process_split = 'kd_digits', True, 'slice'
  c.model.name, c.model.kwargs.hidden = 'mlp', (32,)
  c.parallel = arg
  c.batch_size, c.steps, c.log_every, c.checkpoint_every = 32, 40, 10, 20
  c.wandb.mode, c.evaluate.latency = 'disabled', False
  return c
'''


def _run(cmd, env):
  proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT,
                                                JAX_PLATFORMS='cpu', **env),
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  return proc.stdout


def _result(workdir):
  mngr = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'))
  params = mngr.restore(mngr.latest_step(),
                        args=ocp.args.StandardRestore())['params']
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    losses = [r['loss'] for r in map(json.loads, f) if 'loss' in r]
  with open(os.path.join(workdir, 'summary.json')) as f:
    return params, losses, json.load(f)


@pytest.mark.parametrize('parallel', ['pmap', 'mesh'])
def test_two_processes_match_one_process(tmp_path, parallel):
  config = tmp_path / 'tiny.py'
  config.write_text(CONFIG)
  data.builder('kd_digits')  # Prepared before several processes read it.
  args = [f'--config={config}:{parallel}']
  _run([sys.executable, '-m', 'kd.main', *args, f'--workdir={tmp_path / "one"}'],
       {'XLA_FLAGS': os.environ.get('XLA_FLAGS', '')
                      + ' --xla_force_host_platform_device_count=4'})
  out = _run(['bash', 'launch/local_multihost.sh', '2', *args,
              f'--workdir={tmp_path / "two"}'],
             {'KD_DEVICES_PER_PROCESS': '2', 'KD_LOG_DIR': str(tmp_path)})
  assert out.count('step 40/40') == 1  # Only process 0 prints progress.

  p1, l1, s1 = _result(str(tmp_path / 'one'))
  p2, l2, s2 = _result(str(tmp_path / 'two'))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), p1, p2)
  np.testing.assert_allclose(l1, l2, rtol=1e-6)
  assert s1['test_examples'] == s2['test_examples'] == 360
  assert s1['test_accuracy'] == s2['test_accuracy']
