"""What a test measures: top-1 hits and agreement of logits [..., C] (for
jax and numpy arrays alike, inside a jitted step or on the host), the eval
step's sums over a test split and their rates, and parameter counts.
Timing is `kd.latency`."""
import math

import jax
import numpy as np


def hits(logits, labels):
  """argmax(logits) == labels, per example (bool)."""
  return logits.argmax(-1) == labels


def agreement(logits, other_logits):
  """argmax(logits) == argmax(other_logits), per example (bool): whether two
  models predict the same class."""
  return logits.argmax(-1) == other_logits.argmax(-1)


def count_params(params) -> int:
  return int(sum(np.size(x) for x in jax.tree.leaves(params)))


def sum_stats(eval_fn, parallel, replicated_args, batches) -> dict:
  """The eval step's statistics summed over all batches, on the host."""
  totals = None
  for batch in batches:
    out = parallel.unreplicate(eval_fn(*replicated_args, parallel.shard(batch)))
    totals = out if totals is None else jax.tree.map(np.add, totals, out)
  return totals


def test_rates(eval_fn, parallel, replicated_args, batches,
               sources: tuple[str, ...] = ()) -> dict:
  """Rates of `kd.steps.make_eval_step`'s sums over all batches; with the
  `sources` of a mixed corpus (`kd.data.mixed`, each batch of one source),
  also each source's as '<source>/<rate>' ('/' in a source name as '_')."""
  if not sources:
    return rates(sum_stats(eval_fn, parallel, replicated_args, batches))
  totals = {}
  for batch in batches:
    j = int(np.asarray(batch['source']).flat[0])
    totals.setdefault(j, []).append(parallel.unreplicate(
        eval_fn(*replicated_args, parallel.shard(batch))))
  totals = {j: jax.tree.map(lambda *x: np.sum(x, 0), *t)
            for j, t in totals.items()}
  out = rates(jax.tree.map(lambda *x: np.sum(x, 0), *totals.values()))
  for j, t in sorted(totals.items()):
    out.update({f'{sources[j].replace("/", "_")}/{k}': v
                for k, v in rates(t).items()})
  return out


def rates(totals: dict) -> dict:
  """The test figures of an eval step's summed statistics."""
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
