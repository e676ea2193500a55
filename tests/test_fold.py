"""Folded batch norms (kd.fold) give the model's own inference outputs."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd import config as kd_config, fold, models, runs, train

# name -> (kwargs, input shape, batch norms that stay: those after a residual
# sum, as a pre-activation net's are).
ZOO = {
    'resnet8': ({}, (16, 16, 3), 0),
    'wrn_16_1': ({}, (16, 16, 3), 7),  # 6 blocks' first norms + the last.
    'vgg8': ({}, (16, 16, 3), 0),
    'MobileNetV2': ({}, (16, 16, 3), 0),
    'ShuffleV1': ({}, (16, 16, 3), 0),
    'ShuffleV2': ({}, (16, 16, 3), 0),
    'ResNet50': ({}, (16, 16, 3), 0),
    'resnet18_imagenet': ({}, (16, 16, 3), 0),
    'mobilenet_v1_imagenet': ({}, (16, 16, 3), 0),
    'cnn': ({'channels': (8, 16), 'dense': 16}, (8, 8, 1), 0),
}


def random_variables(model, x, seed=1):
  """Variables of `model` drawn with NumPy (no compiled init): He-scaled
  kernels, and batch norm statistics, scales and biases far from their
  initial 0 / 1 (an untrained net would fold trivially)."""
  rng = np.random.default_rng(seed)

  def draw(path, a):
    key = jax.tree_util.keystr(path)
    if 'batch_stats' in key and key.endswith("['var']"):
      v = rng.uniform(0.3, 3.0, a.shape)
    elif key.endswith("['mean']") or key.endswith("['bias']"):
      v = rng.normal(0.0, 0.5, a.shape)
    elif key.endswith("['scale']"):
      v = rng.uniform(0.5, 2.0, a.shape)
    else:
      v = rng.normal(0.0, np.sqrt(2 / np.prod(a.shape[:-1])), a.shape)
    return v.astype(a.dtype)
  return jax.tree_util.tree_map_with_path(draw, jax.eval_shape(
      model.init, jax.random.key(0), x))


def outputs(model, variables, folded, f_vars, x):
  """(the model's, the folded model's) inference outputs, in one program."""
  return jax.jit(lambda v, fv: (model.apply(v, x, train=False),
                                folded.apply(fv, x, train=False)))(
                                    variables, f_vars)


def num_norms(variables) -> int:
  return len(jax.tree.leaves(variables.get('batch_stats', {}))) // 2


@pytest.mark.parametrize('name', sorted(ZOO))
def test_folded_outputs_equal_the_model_for_every_feature(name):
  kwargs, shape, kept = ZOO[name]
  model = models.create(name, 10, **kwargs)
  x = np.random.default_rng(0).normal(size=(2, *shape)).astype(np.float32)
  variables = random_variables(model, x)
  folded, f_vars = fold.fold_batch_norms(model, variables, x)
  assert num_norms(f_vars) == kept
  if num_norms(variables):
    assert len(folded.layers) == num_norms(variables) - kept
  want, got = outputs(model, variables, folded, f_vars, x)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for path, w in jax.tree_util.tree_leaves_with_path(want):
    g = dict(jax.tree_util.tree_leaves_with_path(got))[path]
    assert g.dtype == w.dtype
    np.testing.assert_allclose(g, w, rtol=1e-5,
                               atol=1e-5 * float(np.max(np.abs(w))),
                               err_msg=jax.tree_util.keystr(path))


class TapBetweenConvAndNorm(nn.Module):
  """A feature read between a conv and its norm, and a conv whose output
  the norm and a shortcut share: neither may fold."""

  @nn.compact
  def __call__(self, x, train=False):
    y = nn.Conv(4, (3, 3), use_bias=False)(x)
    z = nn.BatchNorm(use_running_average=not train)(y)
    u = nn.Conv(4, (3, 3), use_bias=False)(z)
    v = nn.BatchNorm(use_running_average=not train)(u) + u
    w = nn.BatchNorm(use_running_average=not train)(
        nn.Conv(4, (1, 1))(nn.relu(v)))
    return jnp.mean(w, axis=(1, 2)), {'conv_out': y}


def test_only_a_layer_the_norm_alone_reads_folds():
  model = TapBetweenConvAndNorm()
  x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype(np.float32)
  variables = random_variables(model, x)
  folded, f_vars = fold.fold_batch_norms(model, variables, x)
  assert folded.layers == {('Conv_2',)}
  assert set(f_vars['batch_stats']) == {'BatchNorm_0', 'BatchNorm_1'}
  # The folded bias, by the formula, on the layer that had its own bias.
  p, s = variables['params'], variables['batch_stats']['BatchNorm_2']
  scale = p['BatchNorm_2']['scale'] / np.sqrt(s['var'] + 1e-5)
  np.testing.assert_allclose(
      f_vars['params']['Conv_2']['bias'],
      scale * (p['Conv_2']['bias'] - s['mean']) + p['BatchNorm_2']['bias'],
      rtol=1e-6)
  want, got = outputs(model, variables, folded, f_vars, x)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(got[1]['conv_out'], want[1]['conv_out'])
  with pytest.raises(ValueError, match='inference mode only'):
    folded.apply(f_vars, x, train=True)


def test_bfloat16_model_folds_with_its_output_dtypes():
  model = models.create('resnet8', 10, dtype=jnp.bfloat16)
  x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)
  variables = random_variables(model, x)
  folded, f_vars = fold.fold_batch_norms(model, variables, x)
  want, got = outputs(model, variables, folded, f_vars, x)
  assert jax.tree.map(lambda a: a.dtype, got) == jax.tree.map(
      lambda a: a.dtype, want)
  # bfloat16 rounds each layer's output to 8 bits of mantissa.
  np.testing.assert_allclose(got[0], want[0], rtol=0.1, atol=0.1)


def test_model_without_batch_norm_comes_back_unchanged():
  model = models.create('cnn1d', 10)
  x = np.zeros((1, 40, 1), np.float32)
  variables = random_variables(model, x)
  assert fold.fold_batch_norms(model, variables, x) == (model, variables)


@pytest.fixture(scope='module')
def bn_teacher_dir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('teacher'))
  c = kd_config.run_config()
  c.data.name, c.data.augment = 'kd_digits', False
  c.model.name, c.model.kwargs = 'resnet8', {'widths': (4, 4, 8, 8)}
  c.batch_size, c.steps, c.log_every, c.checkpoint_every = 32, 4, 2, 4
  c.wandb.mode, c.evaluate.latency = 'disabled', False
  train.train_and_evaluate(c, workdir)
  return workdir, c


@pytest.mark.parametrize('fold_bn', [True, False])
def test_live_teacher_loads_folded_by_default(tmp_path, bn_teacher_dir,
                                              fold_bn):
  teacher_dir, t_config = bn_teacher_dir
  assert kd_config.run_config().distill.teacher.fold_bn
  c = kd_config.run_config()
  c.data = t_config.data
  c.model.name, c.model.kwargs = 'mlp', {'hidden': (8,)}
  c.distill.teacher.update(workdir=teacher_dir, model='resnet8',
                           kwargs={'widths': (4, 4, 8, 8)}, fold_bn=fold_bn)
  c.distill.terms.kd = kd_config.term('kd', 0.5, temperature=4.0)
  b = train.build(c, str(tmp_path), 'student')
  src = train.teacher_source(c, str(tmp_path), b)
  assert isinstance(src.model, fold.FoldedModel) == fold_bn
  assert num_norms(src.variables) == (0 if fold_bn else 9)
  x = np.random.default_rng(0).uniform(size=(4, *b.example.shape[1:]))
  _, teacher, t_vars, _ = runs.load_run(teacher_dir)
  np.testing.assert_allclose(
      src.model.apply(src.variables, x.astype(np.float32))[0],
      teacher.apply(t_vars, x.astype(np.float32), train=False)[0],
      rtol=1e-5, atol=1e-5)
