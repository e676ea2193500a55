"""1 device vs 8 simulated CPU devices, under pmap and under shard_map."""
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def results(tmp_path_factory):
  out = tmp_path_factory.mktemp('parallel') / 'results.npz'
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu',
             XLA_FLAGS=os.environ.get('XLA_FLAGS', '')
             + ' --xla_force_host_platform_device_count=8')
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'tests', 'parallel_worker.py'),
       str(out)], env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return dict(np.load(out))


@pytest.mark.parametrize('mode', ['supervised', 'distill'])
@pytest.mark.parametrize('run', ['pmap8', 'mesh1', 'mesh8'])
def test_same_losses_and_params_as_one_device_pmap(results, mode, run):
  ref_loss = results[f'pmap1/{mode}_losses']
  ref_params = results[f'pmap1/{mode}_params']
  np.testing.assert_allclose(results[f'{run}/{mode}_losses'], ref_loss,
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(results[f'{run}/{mode}_params'], ref_params,
                             rtol=1e-5, atol=1e-6)


def test_training_moved_the_parameters(results):
  losses = results['pmap1/supervised_losses']
  assert losses.shape == (3,) and np.all(np.isfinite(losses))
  assert losses[-1] != losses[0]


def test_crd_memory_bank_is_the_same_under_pmap_and_mesh(results):
  # Negatives are drawn per device, so 8 devices differ from 1; the two
  # wrappers over the same 8 devices must not.
  np.testing.assert_allclose(results['mesh8/crd_memory'],
                             results['pmap8/crd_memory'], atol=1e-6)
  np.testing.assert_allclose(results['mesh8/crd_losses'],
                             results['pmap8/crd_losses'], rtol=1e-5)
  np.testing.assert_allclose(results['mesh8/crd_params'],
                             results['pmap8/crd_params'], atol=1e-6)
  # Every example's bank row was updated (3 steps x 16 examples = all 48).
  initial_norms = np.linalg.norm(results['pmap8/crd_memory'], axis=1)
  np.testing.assert_allclose(initial_norms, 1.0, rtol=1e-5)
