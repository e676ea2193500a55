"""The helpers written once and used by every caller: dotted paths and
`key=value` lists, atomic writes, tempered softmax, MSE, top-1 hits and
agreement, a model from its config entry, a pipeline's stage directories."""
import json
import os

import jax.numpy as jnp
import ml_collections as mc
import numpy as np
import pytest

from kd import config as kd_config
from kd import fields
from kd import files
from kd import metrics
from kd import models
from kd.losses import divergences, norms


def test_dotted_paths_read_configs_and_json_alike():
  c = mc.ConfigDict({'distill': {'teacher': {'workdir': '/t', 'cache': 0}}})
  as_json = json.loads(json.dumps(c.to_dict()))
  for tree in (c, as_json):
    assert fields.get(tree, 'distill.teacher.workdir') == '/t'
    assert fields.get(tree, 'distill.teacher.cache') == 0
    assert fields.has(tree, 'distill.teacher.cache')  # A falsy value is set.
    assert not fields.has(tree, 'distill.teacher.workdir.x')  # Not a mapping.
    assert fields.get(tree, 'distill.student', 'none') == 'none'
    with pytest.raises(KeyError, match='distill.students'):
      fields.get(tree, 'distill.students.x')


def test_key_value_lists_split_at_commas_then_the_first_equals():
  assert fields.pairs('a=1,b=x=y,,c') == [('a', '1'), ('b', 'x=y'),
                                         ('c', None)]
  assert fields.pairs('') == fields.pairs(None) == []
  assert kd_config.parse_args('teacher_dir=/a=b,seed=3', teacher_dir='',
                              seed=0) == {'teacher_dir': '/a=b', 'seed': 3}
  with pytest.raises(ValueError, match="'seed' has no value; write seed="):
    kd_config.parse_args('seed', seed=0)


def test_atomic_write_keeps_the_old_file_when_the_rename_fails(tmp_path,
                                                              monkeypatch):
  path = str(tmp_path / 'summary.json')
  files.write_json(path, {'b': 1, 'a': [1, 2]})
  with open(path) as f:
    assert f.read() == json.dumps({'a': [1, 2], 'b': 1}, indent=2,
                                  sort_keys=True)

  def killed(src, dst):
    raise KeyboardInterrupt('killed before the rename')

  monkeypatch.setattr(os, 'replace', killed)
  with pytest.raises(KeyboardInterrupt):
    files.write_bytes(path, b'half')
  with open(path) as f:
    assert json.load(f) == {'a': [1, 2], 'b': 1}


def test_tempered_softmax_is_softmax_of_logits_over_t_in_float32():
  z = np.array([[1.0, 2.0, 4.0], [0.0, -3.0, 3.0]], np.float32)
  want = np.exp(z / 4) / np.exp(z / 4).sum(-1, keepdims=True)
  got = divergences.tempered_softmax(jnp.asarray(z, jnp.bfloat16), 4.0)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, atol=1e-2)  # bfloat16 inputs.
  np.testing.assert_allclose(divergences.tempered_softmax(z, 4.0), want,
                             rtol=1e-6)
  np.testing.assert_allclose(divergences.tempered_log_softmax(z, 0.5),
                             np.log(np.exp(z * 2) / np.exp(z * 2).sum(
                                 -1, keepdims=True)), rtol=1e-5, atol=1e-6)


def test_mse_averages_squared_differences_over_the_given_axes():
  a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
  b = np.ones_like(a)
  np.testing.assert_allclose(norms.mse(a, b), ((a - 1) ** 2).mean(-1),
                             rtol=1e-6)
  np.testing.assert_allclose(norms.mse(a, b, (1, 2)),
                             ((a - 1) ** 2).mean((1, 2)), rtol=1e-6)


def test_hits_and_agreement_on_host_and_device_arrays():
  logits = np.array([[0.1, 0.9], [2.0, -1.0], [0.0, 1.0]])
  other = np.array([[1.0, 0.0], [3.0, 0.0], [-1.0, 1.0]])
  labels = np.array([1, 1, 1])
  for x, y in ((logits, other), (jnp.asarray(logits), jnp.asarray(other))):
    np.testing.assert_array_equal(metrics.hits(x, labels), [1, 0, 1])
    np.testing.assert_array_equal(metrics.agreement(x, y), [0, 1, 1])


def test_a_model_from_its_config_entry_computes_in_the_given_dtype():
  kwargs = mc.ConfigDict({'hidden': (8,)})
  assert models.from_config('mlp', kwargs, 3).dtype == jnp.float32
  model = models.from_config('mlp', kwargs, 3, 'bfloat16')
  assert model.dtype == jnp.bfloat16 and tuple(model.hidden) == (8,)
  with pytest.raises(ValueError, match="unknown dtype 'f16'"):
    models.from_config('mlp', kwargs, 3, 'f16')


def test_stage_directories_of_a_config_and_of_its_saved_json_agree():
  c = kd_config.pipeline_config(teacher=kd_config.run_config(),
                                student=kd_config.run_config())
  c.stage_dirs = {'teacher': '/shared/teacher'}
  want = {'teacher': '/shared/teacher', 'student': '/w/student'}
  assert kd_config.stage_dirs(c, '/w') == want
  assert kd_config.stage_dirs(json.loads(json.dumps(c.to_dict())),
                              '/w') == want
