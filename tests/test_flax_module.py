"""Any Flax module as student or teacher (kd.models.flax_module): modules
written here without kd's `(logits, features)` convention, named as
`module:tests.test_flax_module:Name`."""
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd import config as kd_config, models, runs, train

HERE = 'module:tests.test_flax_module'


class Block(nn.Module):
  width: int

  @nn.compact
  def __call__(self, x, training: bool):
    x = nn.Conv(self.width, (3, 3), name='conv')(x)
    return nn.relu(nn.BatchNorm(use_running_average=not training)(x))


class UserCNN(nn.Module):
  """Logits only; its class count is `num_outputs`, its mode `training`."""
  num_outputs: int
  width: int = 4

  @nn.compact
  def __call__(self, x, training: bool = False):
    x = Block(self.width, name='block1')(x, training)
    x = Block(2 * self.width, name='block2')(x, training)
    x = nn.relu(nn.Dense(16)(x.mean((1, 2))))
    return nn.Dense(self.num_outputs)(x)


class UserMLP(nn.Module):
  """Takes `num_classes` and `deterministic`, as many libraries' do."""
  num_classes: int
  hidden: int = 16

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    x = nn.Dense(self.hidden, name='hidden')(x.reshape(x.shape[0], -1))
    x = nn.BatchNorm(use_running_average=deterministic)(nn.relu(x))
    return nn.Dense(self.num_classes)(x)


class Sows(nn.Module):
  """Records its hidden layer with `sow`, as some libraries' modules do."""

  @nn.compact
  def __call__(self, x):
    h = nn.Dense(8)(x.reshape(x.shape[0], -1))
    self.sow('intermediates', 'h', h)
    return nn.Dense(10)(h)


def make_mlp(num_classes: int, hidden: int = 16) -> nn.Module:
  return UserMLP(num_classes, hidden)


def not_a_module(num_classes: int) -> int:
  return num_classes


X = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype(np.float32)


@pytest.fixture(scope='module')
def cnn():
  model = models.create(f'{HERE}:UserCNN', 10, num_outputs=10,
                        capture=('block1/conv', 'Dense_0'))
  return model, model.init(jax.random.key(0), X[:1])


def test_logits_and_features_are_the_modules_own_outputs(cnn):
  model, variables = cnn
  logits, features = model.apply(variables, X)
  inner = {k: v['module'] for k, v in variables.items()}
  want, state = UserCNN(10).apply(inner, X, capture_intermediates=True)
  np.testing.assert_array_equal(logits, want)
  assert sorted(features) == ['Dense_0', 'block1/conv']
  intermediates = state['intermediates']
  np.testing.assert_array_equal(
      features['block1/conv'], intermediates['block1']['conv']['__call__'][0])
  np.testing.assert_array_equal(features['Dense_0'],
                                intermediates['Dense_0']['__call__'][0])
  assert features['block1/conv'].shape == (4, 8, 8, 4)


def test_train_reaches_the_modules_own_flag(cnn):
  """BatchNorm normalises with the batch's statistics (and updates its
  running ones) only in training mode."""
  model, variables = cnn
  _, updated = model.apply(variables, X, train=True, mutable=['batch_stats'])
  stats = updated['batch_stats']['module']['block1']['BatchNorm_0']
  conv = model.apply(variables, X)[1]['block1/conv']
  # Flax's momentum 0.99: the running mean moves 1% of the way from 0.
  np.testing.assert_allclose(stats['mean'], 0.01 * conv.mean((0, 1, 2)),
                             rtol=1e-5, atol=1e-7)
  mlp = models.create(f'{HERE}:UserMLP', 10, capture='hidden')
  v = mlp.init(jax.random.key(0), X)
  for train, moved in ((False, False), (True, True)):
    _, new = mlp.apply(v, X, train=train, mutable=['batch_stats'])
    assert moved == bool(jnp.any(new['batch_stats']['module']['BatchNorm_0'][
        'mean'] != 0))


def test_num_classes_and_dtype_go_where_the_module_takes_them():
  mlp = models.create(f'{HERE}:make_mlp', 7, dtype=jnp.bfloat16, hidden=8)
  assert (mlp.module.num_classes, mlp.module.hidden) == (7, 8)
  logits, features = mlp.apply(mlp.init(jax.random.key(0), X), X)
  assert logits.shape == (4, 7) and logits.dtype == jnp.float32
  assert features == {}


def test_a_modules_own_sow_adds_no_model_state():
  """kd keeps every collection but params as model state: a sown
  'intermediates' would grow it each step."""
  model = models.create(f'{HERE}:Sows', 10, capture='Dense_0')
  variables = model.init(jax.random.key(0), X)
  assert set(variables) == {'params'}
  (_, features), state = model.apply(variables, X, train=True, mutable=[])
  assert state == {} and features['Dense_0'].shape == (4, 8)


def test_errors_name_the_fix(cnn):
  model = models.create(f'{HERE}:UserCNN', 10, num_outputs=10,
                        capture=('block3/conv',))
  with pytest.raises(ValueError, match=(
      r"UserCNN has no submodule 'block3/conv'; submodule paths and output "
      r'shapes: Dense_0 \(1, 16\), Dense_1 \(1, 10\), block1 \(1, 8, 8, 4\), '
      r'block1/BatchNorm_0 \(1, 8, 8, 4\), block1/conv \(1, 8, 8, 4\)')):
    model.init(jax.random.key(0), X[:1])
  wrong = models.create(f'{HERE}:UserCNN', 10, num_outputs=7)
  with pytest.raises(ValueError, match=r'returned \(1, 7\).*logits \[\.\.\., '
                     r'10\].*class count in model.kwargs'):
    wrong.init(jax.random.key(0), X[:1])
  for name, match in (('module:tests.test_flax_module', 'package.path:Class'),
                      ('module:tests.nowhere:Net', "cannot import 'tests."
                       "nowhere'"),
                      (f'{HERE}:UserRNN', r'has no .UserRNN.; it has: .*'
                       r'UserCNN, UserMLP'),
                      (f'{HERE}:X', 'is a ndarray, not a flax.linen.Module class'),
                      (f'{HERE}:not_a_module', 'is a int, not a flax.linen.Module$')):
    with pytest.raises(ValueError, match=match):
      models.create(name, 10)
  with pytest.raises(ValueError, match=r"unexpected keyword.*'depth'.*"
                     r'its arguments: num_outputs, width'):
    models.create(f'{HERE}:UserCNN', 10, num_outputs=10, depth=3)


def _config(model: str, kwargs: dict, steps: int):
  c = kd_config.run_config()
  c.data.name, c.data.augment = 'kd_digits', False
  c.model.name, c.model.kwargs = model, kwargs
  c.batch_size, c.steps, c.log_every = 32, steps, 10
  c.optimizer.lr = 3e-3
  c.wandb.mode = 'disabled'
  c.evaluate.latency = False
  return c


def test_a_user_teacher_distils_into_a_user_student_through_features(
    tmp_path):
  """UserMLP trained here is the teacher; UserCNN the student, with KD on
  the logits and hidden-state matching from its `Dense_0` to the teacher's
  `hidden` (both 16 wide), read from the captured outputs."""
  teacher_dir = str(tmp_path / 'teacher')
  train.train_and_evaluate(_config(f'{HERE}:UserMLP', {}, 30), teacher_dir)
  c = _config(f'{HERE}:UserCNN',
              {'num_outputs': 10, 'capture': ('Dense_0',)}, 30)
  c.distill.teacher.update(workdir=teacher_dir, model=f'{HERE}:UserMLP',
                           kwargs={'capture': ('hidden',)})
  c.distill.terms.kd = kd_config.term('kd', 0.5, temperature=4.0)
  c.distill.terms.match = kd_config.term('hidden_mse', 1.0,
                                         student='Dense_0', teacher='hidden')
  student_dir = str(tmp_path / 'student')
  summary = train.train_and_evaluate(c, student_dir)
  assert summary['steps'] == 30
  rows = [json.loads(l) for l in open(tmp_path / 'student' / 'metrics.jsonl')]
  matched = [r['match'] for r in rows if 'match' in r]
  assert len(matched) == 3 and matched[-1] < matched[0]
  # The checkpoint holds the module's own parameters, under `module`.
  _, model, variables, _ = runs.load_run(student_dir)
  inner = {k: v['module'] for k, v in variables.items()}
  np.testing.assert_array_equal(model.apply(variables, X)[0],
                                UserCNN(10).apply(inner, X))


def test_an_uncaptured_feature_lists_the_captured_ones(tmp_path):
  c = _config(f'{HERE}:UserCNN', {'num_outputs': 10, 'capture': ('Dense_0',)},
              10)
  c.distill.teacher.update(workdir=str(tmp_path), model=f'{HERE}:UserMLP',
                           kwargs={'capture': ('hidden',)})
  c.distill.terms.hint = kd_config.term('hint', 1.0, student='block2/conv',
                                        teacher='hidden')
  with pytest.raises(ValueError, match=r"student output 'block2/conv'; the "
                     r'student has: Dense_0, logits'):
    train.build(c, str(tmp_path), 'student')
