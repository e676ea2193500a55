"""Seconds a training step of a convolutional student takes in one call,
inside `lax.scan`'s loop, and with the loop unrolled, side by side.

  python -m experiments.benchmark.scan_unroll [--model=resnet8x4] [--batch=64] [--k=2]

Why `kd.steps.multi_step` unrolls its k steps on the CPU: XLA:CPU runs the
convolutions of a step placed inside a while loop (a rolled `lax.scan`)
many times slower than the same step called on its own. Times the
student's supervised step (SGD, momentum 0.9; synthetic CIFAR-sized batch)
three ways: one step a call; `k` steps a call scanned (`unroll=1`); `k`
steps a call unrolled (`unroll=True`), and prints seconds per step and the
ratios to one step a call. Best of `--iters` calls after one warm-up call
each.
"""
import time

from absl import app
from absl import flags
import jax
import numpy as np
import optax

from kd import models, steps
from kd.parallel import DataParallel

def define_flags():
  flags.DEFINE_string('model', 'resnet8x4', 'A CIFAR model of the zoo.')
  flags.DEFINE_integer('batch', 64, 'Batch size.')
  flags.DEFINE_integer('k', 2, 'Steps per call of the scanned programs.')
  flags.DEFINE_integer('iters', 2, 'Timed calls per program (best is kept).')


FLAGS = flags.FLAGS


def call_seconds(fn, state, batch, iters):
  """(state, seconds of each of `iters` calls `state, m = fn(state, batch)`
  after one warm-up call)."""
  state, _ = fn(state, batch)
  jax.block_until_ready(state)
  times = []
  for _ in range(iters):
    t0 = time.perf_counter()
    state, m = fn(state, batch)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  return state, times


def supervised(name: str, batch: int):
  """(par, step, replicated state, images, labels): zoo model `name`'s
  supervised step (SGD, momentum 0.9) on one synthetic CIFAR-sized batch."""
  model = models.create(name, 100)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(batch, 32, 32, 3)).astype(np.float32)
  y = rng.integers(0, 100, batch).astype(np.int32)
  tx = optax.sgd(0.01, momentum=0.9)
  par = DataParallel('pmap')
  state = par.replicate(steps.create_state(model, tx, jax.random.key(0),
                                           x[:1]))
  return par, steps.make_supervised_step(model, tx), state, x, y


def main(argv):
  del argv
  par, base, state, x, y = supervised(FLAGS.model, FLAGS.batch)
  state, times = call_seconds(par.wrap(base, 1), state,
                              par.shard({'image': x, 'label': y}), FLAGS.iters)
  one = min(times)
  k = FLAGS.k
  stacked = par.shard({'image': np.stack([x] * k),
                       'label': np.stack([y] * k)}, lead=1)
  print(f'{FLAGS.model}, batch {FLAGS.batch}, {jax.default_backend()}, '
        f'{jax.local_device_count()} device(s), jax {jax.__version__}')
  print(f'one step a call: {one:.3f} s a step')
  for name, unroll in (('scanned', 1), ('unrolled', True)):

    def k_steps(s, b, unroll=unroll):
      s, m = jax.lax.scan(base, s, b, unroll=unroll)
      return s, jax.tree.map(lambda a: a.sum(0), m)

    state, times = call_seconds(par.wrap(k_steps, 1, lead=1), state,
                                stacked, FLAGS.iters)
    t = min(times)
    print(f'{k} steps a call, {name}: {t / k:.3f} s a step '
          f'({t / k / one:.2f}x one step a call)', flush=True)


if __name__ == '__main__':
  define_flags()
  app.run(main)
