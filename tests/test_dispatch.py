"""Several training steps per jitted call (`config.steps_per_dispatch`)."""
import os

import jax
import numpy as np
import optax
import pytest

from kd import checkpoint, config as kd_config, models, steps, train
from kd import parallel as kd_parallel, sharding
from kd.data import select
from tests import run_checks


def _config(k: int, parallel: str = 'pmap'):
  c = kd_config.run_config()
  c.data.name, c.data.augment = 'kd_digits', False
  c.model.kwargs.hidden = (16,)
  c.batch_size, c.steps, c.log_every, c.checkpoint_every = 32, 16, 8, 8
  c.optimizer.lr = 3e-3
  c.mixup_alpha = 0.2  # The step's random numbers follow the step count.
  c.wandb.mode, c.evaluate.latency = 'disabled', False
  c.steps_per_dispatch, c.parallel = k, parallel
  return c


@pytest.fixture(scope='module')
def one_step_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('k1'))
  train.train_and_evaluate(_config(1), workdir)
  return workdir


@pytest.mark.parametrize('parallel', ['pmap', 'mesh'])
def test_four_steps_per_call_train_the_same_parameters(tmp_path, one_step_run,
                                                       parallel):
  workdir = str(tmp_path)
  summary = train.train_and_evaluate(_config(4, parallel), workdir)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
               run_checks.latest_params(one_step_run), run_checks.latest_params(workdir))
  rows, ref = run_checks.rows(workdir), run_checks.rows(one_step_run)
  assert [r['step'] for r in rows] == [r['step'] for r in ref] == [8, 16, 16]
  for got, want in zip(rows, ref):  # Interval means over the same steps.
    for key in ('loss', 'accuracy', 'learning_rate', 'test_accuracy'):
      if key in want:
        np.testing.assert_allclose(got[key], want[key], atol=1e-5)
  assert summary['steps'] == 16
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['16', '8']


def test_resume_with_another_steps_per_dispatch(tmp_path, one_step_run):
  workdir = str(tmp_path)
  half = _config(1)
  half.steps_per_dispatch = 2
  with pytest.raises(KeyboardInterrupt):
    _interrupted(half, workdir)
  train.train_and_evaluate(_config(4), workdir)  # Resumes from step 8.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
               run_checks.latest_params(one_step_run), run_checks.latest_params(workdir))


def _interrupted(config, workdir):
  """Trains `config` until its first checkpoint (step 8), then stops."""
  real = checkpoint.save

  def save_then_stop(mngr, step, state):
    real(mngr, step, state)
    raise KeyboardInterrupt('simulated interruption')

  checkpoint.save = save_then_stop
  try:
    train.train_and_evaluate(config, workdir)
  finally:
    checkpoint.save = real


@pytest.mark.parametrize('field,value', [('steps', 18), ('log_every', 6),
                                         ('checkpoint_every', 10),
                                         ('eval_every', 4)])
def test_intervals_must_be_multiples_of_steps_per_dispatch(field, value):
  c = _config(8)
  c.steps, c.log_every, c.checkpoint_every = 16, 8, 8
  c[field] = value
  with pytest.raises(ValueError, match=rf'config\.{field}={value}: must be a '
                     r'multiple of steps_per_dispatch=8.*--config\.'
                     rf'{field} to a multiple of 8'):
    kd_config.validate(c)


def test_variants_take_one_step_per_call():
  from kd import variant  # pylint: disable=import-outside-toplevel
  c = _config(4)
  c.mixup_alpha = 0.0
  with pytest.raises(ValueError, match=r'config\.steps_per_dispatch=4: the '
                     r'x variant does not support it; set it to 1'):
    variant.reject_unsupported(c, variant.UNSUPPORTED, 'x')


@pytest.mark.parametrize('parallel', ['pmap', 'mesh', 'sharded'])
def test_host_sum_adds_the_metrics_of_several_steps(parallel):
  par = (sharding.ShardedParallel() if parallel == 'sharded'
         else kd_parallel.DataParallel(parallel))
  steps = [{'loss': np.float32(v), 'n': np.arange(3, dtype=np.float32) * v}
           for v in (0.5, 1.25, 2.0)]
  got = par.host_sum([par.replicate(s) for s in steps])
  np.testing.assert_allclose(got['loss'], 3.75)
  np.testing.assert_allclose(got['n'], [0.0, 3.75, 7.5])
  assert not isinstance(got['loss'], jax.Array)  # On the host.


@pytest.mark.parametrize('held_bytes, reads', [(select.EVAL_HELD_BYTES, 1),
                                               (0, 3)])
def test_the_test_split_is_read_once_when_it_fits(monkeypatch, held_bytes,
                                                  reads):
  monkeypatch.setattr(select, 'EVAL_HELD_BYTES', held_bytes)
  calls = []
  real = select.eval_batches
  monkeypatch.setattr(select, 'eval_batches',
                      lambda *a: calls.append(a) or real(*a))
  batches = select.test_split(_config(1))
  passes = [list(batches()) for _ in range(3)]
  assert len(calls) == reads
  assert len(passes[0]) == 2  # kd_digits: 360 test examples, batches of 256
  for p in passes[1:]:
    jax.tree.map(np.testing.assert_array_equal, p, passes[0])


def test_a_pmap_step_compiles_once():
  """The state from `replicate` and the step's own output state are placed
  alike, so the second call reuses the first call's program."""
  model = models.create('mlp', 10, hidden=(8,))
  tx = optax.sgd(0.1)
  par = kd_parallel.DataParallel('pmap')
  x = np.zeros((4, 8, 8, 1), np.float32)
  state = par.replicate(steps.create_state(model, tx, jax.random.key(0),
                                           x[:1]))
  step = par.wrap(steps.make_supervised_step(model, tx), 1)
  batch = par.shard({'image': x, 'label': np.zeros(4, np.int32)})
  compiles = []  # A backend compile, or a hit in the persistent cache.

  def on_duration(event, duration, **kwargs):
    del duration, kwargs
    if event == '/jax/core/compile/backend_compile_duration':
      compiles.append(event)

  def on_event(event, **kwargs):
    del kwargs
    if event == '/jax/compilation_cache/cache_hits':
      compiles.append(event)

  jax.monitoring.register_event_duration_secs_listener(on_duration)
  jax.monitoring.register_event_listener(on_event)
  try:
    for _ in range(3):
      state, metrics = step(state, batch)
      jax.block_until_ready(metrics)
  finally:
    jax.monitoring.unregister_event_duration_listener(on_duration)
    jax.monitoring.unregister_event_listener(on_event)
  assert len(compiles) == 1, compiles
