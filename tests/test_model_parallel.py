"""A teacher split over the mesh's `model` axis (8 simulated CPU devices)
gives the same outputs, and the same distilled student, as a replicated
one."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from kd.parallel import DataParallel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def report(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('model_parallel')
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu',
             XLA_FLAGS=os.environ.get('XLA_FLAGS', '')
             + ' --xla_force_host_platform_device_count=8')
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'tests', 'model_parallel_worker.py'),
       str(tmp / 'report.json'), str(tmp)], env=env, capture_output=True,
      text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.load(open(tmp / 'report.json'))


def test_sharded_teacher_outputs_match_and_parameters_are_split(report):
  f = report['forward']
  assert f['mesh'] == {'batch': 2, 'model': 4}
  assert f['max_logit_diff'] < 1e-5 and f['max_embedding_diff'] < 1e-5
  # The dense kernel [flat, 32] is split 4 ways along its larger dimension;
  # the head's bias (10) does not divide by 4 and stays whole.
  rows, cols = f['dense_kernel']
  assert f['dense_kernel_shard'] == [rows // 4, cols]
  assert f['head_bias_shard'] == [10]


def test_distillation_with_a_sharded_teacher_matches_a_replicated_one(report):
  a, b = report['replicated'], report['sharded']
  np.testing.assert_allclose(b['params'], a['params'], rtol=1e-5, atol=1e-6)
  for key in ('test_accuracy', 'teacher_agreement'):
    assert a[key] == b[key]
  assert a['kl_to_teacher'] == pytest.approx(b['kl_to_teacher'], rel=1e-5)


def test_model_shards_need_the_mesh():
  with pytest.raises(ValueError, match="parallel='mesh'"):
    DataParallel('pmap', model_shards=2)
