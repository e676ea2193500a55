"""Test-set statistics, parameter counts and batch-1 latency."""
import math
import statistics
import time

import jax
import numpy as np

from kd.data import select


def count_params(params) -> int:
  return int(sum(np.size(x) for x in jax.tree.leaves(params)))


def sum_stats(eval_fn, parallel, replicated_args, batches) -> dict:
  """The eval step's statistics summed over all batches, on the host."""
  totals = None
  for batch in batches:
    out = parallel.unreplicate(eval_fn(*replicated_args, parallel.shard(batch)))
    totals = out if totals is None else jax.tree.map(np.add, totals, out)
  return totals


def run_eval(eval_fn, parallel, replicated_args, batches) -> dict:
  """Rates of `kd.steps.make_eval_step`'s sums over all batches."""
  totals = sum_stats(eval_fn, parallel, replicated_args, batches)
  n = float(totals['count'])
  result = {'test_accuracy': float(totals['correct']) / n,
            'test_loss': float(totals['loss']) / n, 'test_examples': n}
  result.update({f'test_accuracy_{k[len("correct_"):]}': float(v) / n
                 for k, v in totals.items() if k.startswith('correct_')})
  if 'bytes' in totals:  # Cross-entropy in nats per token -> bits per byte.
    result['test_bits_per_byte'] = (float(totals['loss']) / math.log(2) /
                                    float(totals['bytes']))
    result['test_perplexity'] = math.exp(result['test_loss'])
  if 'agree' in totals:
    result['teacher_agreement'] = float(totals['agree']) / n
    result['kl_to_teacher'] = float(totals['kl']) / n
  return result


def named_rates(totals: dict) -> dict:
  """`<name>/test_accuracy` and `<name>/test_loss` from the sums of
  `kd.steps.make_named_eval_step`."""
  n = float(totals['count'])
  out = {}
  for key, value in totals.items():
    if key.endswith('/correct'):
      out[key[:-len('correct')] + 'test_accuracy'] = float(value) / n
    elif key.endswith('/loss'):
      out[key[:-len('loss')] + 'test_loss'] = float(value) / n
  return out


def test_named(config, parallel, eval_fn, replicated_args) -> dict:
  """`named_rates` of a `make_named_eval_step` over the config's test split."""
  return named_rates(sum_stats(eval_fn, parallel, replicated_args,
                               select.eval_batches(config)))


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
