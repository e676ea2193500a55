"""Student and teacher split over a data x fsdp x tensor mesh (kd.sharding):
the rules' layouts, and distillation on 8 simulated CPU devices matching one
device."""
import json
import os
import socket
import subprocess
import sys

import jax
import ml_collections as mc
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from kd import config as kd_config, sharding
from kd.parallel import DataParallel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MESH = {'data': 2, 'fsdp': 2, 'tensor': 2}


@pytest.fixture(scope='module')
def report(tmp_path_factory):
  path = tmp_path_factory.mktemp('sharding') / 'report.json'
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu',
             XLA_FLAGS=os.environ.get('XLA_FLAGS', '')
             + ' --xla_force_host_platform_device_count=8')
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'tests', 'sharding_worker.py'),
       str(path)], env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(path.read_text())


def test_two_processes_run_the_same_mesh_as_one(report, tmp_path):
  """2 processes x 4 devices (jax.distributed, gloo), as the launcher
  starts them: the same losses and parameters as 1 process x 8."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  procs = [subprocess.Popen(
      [sys.executable, os.path.join(ROOT, 'tests', 'sharding_worker.py'),
       str(tmp_path / 'report.json'), 'multihost'],
      env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu',
               XLA_FLAGS=os.environ.get('XLA_FLAGS', '')
               + ' --xla_force_host_platform_device_count=4',
               KD_COORDINATOR=f'127.0.0.1:{port}', KD_NUM_PROCESSES='2',
               KD_PROCESS_ID=str(i)),
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  try:
    for p in procs:
      out = p.communicate(timeout=600)[0]
      assert p.returncode == 0, out[-3000:]
  finally:  # A process left waiting for a failed peer.
    for p in procs:
      p.kill()
  got = json.loads((tmp_path / 'report.json').read_text())
  assert (got['processes'], got['local_devices']) == (2, 4)
  np.testing.assert_allclose(got['losses'], report['distill']['losses'],
                             rtol=1e-6)
  np.testing.assert_allclose(got['params'], report['distill']['params'],
                             atol=1e-6)


def test_lm_distillation_on_the_mesh_matches_one_device(report):
  r = report['distill']
  assert r['mesh'] == MESH
  np.testing.assert_allclose(r['losses'], r['want_losses'], rtol=1e-5)
  assert r['max_param_diff'] < 1e-5
  assert all(r['layout_kept'])  # Steps chain without moving parameters.


def test_each_device_holds_a_quarter_of_student_and_teacher(report):
  r = report['distill']
  # query [embed 32, heads 4, kv 8]: embed over fsdp, heads over tensor.
  assert r['query_spec'] == ['fsdp', 'tensor']
  assert r['query_shard'] == [16, 2, 8]
  # Matrices split 4 ways (fsdp x tensor); norm scales only 2 ways.
  for name in ('student', 'momentum', 'teacher'):
    per_device, total = r[f'{name}_device_bytes'], r[f'{name}_bytes']
    assert len(per_device) == 8
    assert total / 4 <= max(per_device) < 0.26 * total, name


def test_generic_rules_distil_an_mlp_from_a_cnn_as_one_device(report):
  r = report['generic']
  np.testing.assert_allclose(r['losses'], r['want_losses'], rtol=1e-5)
  assert r['max_param_diff'] < 1e-5
  assert r['kernel_spec'] == ['fsdp']  # [16, 32]: inputs over fsdp only.


@pytest.mark.parametrize('case', ['mixture', 'routed_across'])
def test_several_lm_teachers_on_the_mesh_match_one_device(report, case):
  """kd.teachers' mixture, and routing to a teacher of the student's
  vocabulary and one of another (its own tokens, the aligned hybrid),
  under the sharded wrapper as on one device."""
  r = report['several'][case]
  assert len(r['losses']) == 3 and np.all(np.isfinite(r['losses']))
  assert len(set(r['losses'])) == 3  # Each step moves the student.
  np.testing.assert_allclose(r['losses'], r['want_losses'], rtol=1e-5)
  assert r['max_param_diff'] < 1e-5


def test_a_global_batch_step_without_collectives(report):
  r = report['global']
  assert r['loss'] == pytest.approx(r['want_loss'], rel=1e-6)
  assert r['max_param_diff'] < 1e-6
  assert r['w_spec'] == ['fsdp', 'tensor']


@pytest.mark.parametrize('shape, axes, spec', [
    ((64, 32), ('vocab', 'embed'), P('tensor', 'fsdp')),
    ((65, 32), ('vocab', 'embed'), P(None, 'fsdp')),  # 65 % 2: replicated.
    ((32, 4, 8), ('embed', 'heads', 'kv'), P('fsdp', 'tensor')),
    ((32, 1, 8), ('embed', 'heads', 'kv'), P('fsdp')),  # One kv head.
    ((8, 16), ('batch', None), P(('data', 'fsdp'))),
    ((6, 16), ('batch', None), P('data')),  # 6 splits 2 ways, not 4.
    ((32, 64), ('mlp', 'mlp'), P('tensor')),  # A mesh axis used once.
    ((), (), P()),
])
def test_partition_spec(shape, axes, spec):
  assert sharding.partition_spec(shape, axes, MESH) == spec


def test_size_one_mesh_axes_are_left_out_of_specs():
  mesh = {'data': 8, 'fsdp': 1, 'tensor': 1}
  assert sharding.partition_spec((32, 64), ('embed', 'mlp'), mesh) == P()


def test_rules_align_to_the_trailing_dimensions():
  rules = sharding.RULES
  assert sharding.logical_axes('params/blocks_0/attn/query/kernel', 3,
                               rules) == ('embed', 'heads', 'kv')
  # Adam's statistics end with the parameter's path.
  assert sharding.logical_axes('opt_state/0/mu/0/blocks_0/mlp/down/kernel',
                               2, rules) == ('mlp', 'embed')
  assert sharding.logical_axes('params/conv1/kernel', 4, rules) == (
      None, None, 'embed', None)
  assert sharding.logical_axes('batch_stats/bn1/mean', 1, rules) == (None,)
  # Fewer dimensions than the rule (factored statistics): replicated.
  assert sharding.logical_axes('v_row/blocks_0/attn/out/kernel', 2,
                               rules) == (None, None)
  assert sharding.logical_axes('opt_state/0/count', 0, rules) == ()


@pytest.mark.parametrize('shape, devices, sizes', [
    (None, 8, (8, 1, 1)),
    ({'data': 2, 'fsdp': 2, 'tensor': 2}, 8, (2, 2, 2)),
    ({'fsdp': -1, 'tensor': 2}, 8, (1, 4, 2)),
])
def test_mesh_sizes(shape, devices, sizes):
  assert sharding.mesh_sizes(shape, devices) == sizes


@pytest.mark.parametrize('shape, match', [
    ({'data': 3}, 'does not fit 8 devices'),
    ({'data': -1, 'fsdp': 3}, 'does not fit 8 devices'),
    ({'data': -1, 'fsdp': -1}, 'at most one of them -1'),
    ({'model': 2}, r"unknown mesh axes \['model'\]"),
])
def test_bad_mesh_shapes_name_the_problem(shape, match):
  with pytest.raises(ValueError, match=match):
    sharding.mesh_sizes(shape, 8)


def test_batch_must_split_over_data_and_fsdp(report):
  assert report['distill']['per_process_batch'] == 8
  assert ('batch size 6 is not divisible by data x fsdp = 4'
          in report['distill']['bad_batch_error'])


def test_create_picks_the_parallelism_from_the_config():
  c = kd_config.run_config()
  assert isinstance(sharding.create(c), DataParallel)
  c.parallel = 'sharded'
  c.mesh = mc.ConfigDict({'data': -1})
  parallel = sharding.create(c)
  assert isinstance(parallel, sharding.ShardedParallel)
  assert dict(parallel.mesh.shape) == {'data': jax.device_count(), 'fsdp': 1,
                                       'tensor': 1}
  c.mesh.fsdp = -1  # With data's default -1: two axes left open.
  with pytest.raises(kd_config.ConfigError, match=r"config.mesh: mesh \{"
                     r"'data': -1, 'fsdp': -1.*at most one of them -1 .* "
                     r'e\.g\. --config.mesh.data=1 --config.mesh.fsdp=-1'):
    sharding.create(c)
  c.mesh = mc.ConfigDict({'data': -1})
  c.distill.teacher.model_shards = 2
  with pytest.raises(ValueError, match="teacher is split by the mesh's fsdp"):
    sharding.create(c)
  c.parallel = 'shard'
  with pytest.raises(ValueError, match=r"'shard'; valid: \('pmap', 'mesh', "
                     r"'sharded'\)"):
    sharding.create(c)


def test_a_teacher_checkpoint_is_read_onto_the_mesh(report):
  """kd.runs.load_variables with shardings: each array on the mesh as the
  rules lay it out, the values the host path reads, no optimizer state."""
  r = report['load']
  assert r['steps'] == [7, 7]
  assert r['host_types'] == ['ndarray']  # The data-parallel path: NumPy.
  assert r['values_equal'] and all(r['values_equal'])
  assert r['saved_equal'] and all(r['saved_equal'])
  assert all(r['shardings_equal'])
  assert r['query_spec'] == ['fsdp', 'tensor']
  assert all(r['placed_kept'])  # place() moves nothing already there.
  # Another architecture is refused from the metadata, naming the leaves.
  assert 'missing in checkpoint' not in r['mismatch']
  assert "unexpected in checkpoint: ['params']['blocks_3']" in r['mismatch']


def test_a_strided_student_is_read_onto_the_mesh(report):
  r = report['load']
  # 4 teacher layers -> 2: student layer 1 is teacher layer 2.
  assert r['warm_from_layer_2']
  assert r['warm_equal'] and all(r['warm_equal'])
  assert all(r['warm_shardings_equal'])
