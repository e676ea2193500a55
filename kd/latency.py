"""Batch-1 latency: the median wall time of a call, after warm-up, for
jitted JAX and exported runtimes alike."""
import statistics
import time

import jax
import numpy as np


def latency_ms(fn, example, *, warmup: int = 10, runs: int = 100) -> float:
  """Median wall time of `fn(example)` in milliseconds, after warm-up."""
  def call():
    out = fn(example)
    jax.tree.map(lambda x: getattr(x, 'block_until_ready', lambda: x)(), out)
  for _ in range(warmup):
    call()
  times = []
  for _ in range(runs):
    t0 = time.perf_counter()
    call()
    times.append(time.perf_counter() - t0)
  return 1000.0 * statistics.median(times)


def model_latency_ms(model, variables, input_shape, dtype='float32',
                     **kwargs) -> float:
  """Batch-1 latency of the jitted inference function on the default device
  (for a language model: one forward pass over a whole sequence)."""
  fn = jax.jit(lambda x: model.apply(variables, x, train=False)[0])
  return latency_ms(fn, np.zeros((1, *input_shape), dtype), **kwargs)
