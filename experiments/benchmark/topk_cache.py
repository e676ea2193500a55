"""Size, error and reading speed of the LM top-k teacher cache per storage
(`distill.teacher.cache_quantize`), side by side in one process.

  python -m experiments.benchmark.topk_cache [--k=64] [--vocabs=259,32768] [--out=DIR]

Per vocabulary size V and storage: bytes per token and per stored logit;
the error of the decoded teacher against the float32 one, as the mean
KL(p || p^) over the k + 1 buckets (the k tokens and the tail) and the
p-weighted mean |log p^ - log p| over the k; and tokens/s of the reader
(`kd.cache.TopkCache.lookup` of random batches of 32 rows of 128 tokens
from a cache of 256 rows built on disk by `kd.cache.build_topk`: memory-
mapped reads and, for the records, their decoding), median of timed
iterations, and its ratio to the float32 cache's reader.

The teacher is synthetic: per token, k distinct tokens, log-probabilities
log softmax(z) + log(1 - t) of sorted normal logits z (sd 2) and a tail
mass t uniform in [0.01, 0.5]; a real teacher's distributions are more
peaked. The 'q8 sqrt' row is the measured alternative grid (codes of
sqrt(d / s), `kd.topk_codec`), not a config choice.
"""
import json
import os
import statistics
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

from kd import cache, names, topk_codec

FLAGS = flags.FLAGS


def define_flags():
  # Defined when run, not on import: tests import this module beside others
  # that define flags of the same names.
  flags.DEFINE_integer('k', 64, 'top k')
  flags.DEFINE_string('vocabs', '259,32768',
                      'vocabulary sizes, comma-separated')
  flags.DEFINE_integer('iters', 20, 'timed reads per storage')
  flags.DEFINE_string('out', '', 'directory for topk_cache_results.json')

ROWS, SEQ, BATCH = 256, 128, 32


def synthetic_topk(rng, shape, vocab: int, k: int):
  """(log-probabilities [..., k] descending, distinct tokens, log tail)."""
  z = -np.sort(-rng.normal(size=(*shape, k)) * 2, -1)
  tail = rng.uniform(0.01, 0.5, shape)
  lp = z - np.log(np.exp(z).sum(-1, keepdims=True)) + np.log1p(-tail)[..., None]
  start = rng.integers(0, vocab, (*shape, 1))
  stride = rng.integers(1, max(vocab // k, 2), (*shape, 1))
  return lp, (start + np.arange(k) * stride) % vocab, np.log(tail)


def errors(vocab: int, k: int, bits: int, grid: str, n: int = 4096) -> dict:
  """Mean KL over the k + 1 buckets and p-weighted |log p^ - log p|."""
  lp, idx, lt = synthetic_topk(np.random.default_rng(0), (n,), vocab, k)
  got_lp, got_idx, got_lt = topk_codec.decode(
      topk_codec.encode(lp, idx, lt, vocab, bits, grid), vocab, k, bits, grid)
  # Each decoded token's teacher log-probability (the records may reorder).
  order = np.argsort(idx, -1)
  lp_sorted = np.take_along_axis(lp, order, -1)
  if topk_codec.index_coding(vocab, k) == 'packed':
    lp_sorted = lp
  p = np.concatenate([lp_sorted, lt[:, None]], -1)
  q = np.concatenate([got_lp, got_lt[:, None]], -1).astype(np.float64)
  return {'kl': float(np.mean(np.sum(np.exp(p) * (p - q), -1))),
          'weighted_abs_log_error': float(np.mean(np.sum(
              np.exp(lp_sorted) * np.abs(got_lp - lp_sorted), -1)))}


def reader_tokens_per_s(vocab: int, k: int, quantize: str, iters: int,
                        root: str) -> float:
  """Tokens/s of `TopkCache.lookup` on a cache built in `root`."""
  rng = np.random.default_rng(1)
  meta = {'format': cache.TOPK_FORMAT, 'topk': k, 'quantize': quantize,
          'vocab_size': vocab}
  teacher = lambda tokens: synthetic_topk(rng, tokens.shape, vocab, k)
  path = os.path.join(root, f'{vocab}_{quantize}')
  rows = np.zeros((ROWS, SEQ + 1), np.int32)
  cache.build_topk(path, meta, teacher, rows, np.arange(ROWS), batch_size=8,
                   shard_rows=128)
  reader = cache.TopkCache(path, meta)
  picks = [rng.choice(ROWS, BATCH, replace=False) for _ in range(iters + 2)]
  reader.lookup(picks[0])
  times = []
  for pick in picks[1:]:
    start = time.perf_counter()
    reader.lookup(np.sort(pick))
    times.append(time.perf_counter() - start)
  return BATCH * SEQ / statistics.median(times)


def bench(vocab: int, k: int, iters: int) -> list[dict]:
  out = []
  with tempfile.TemporaryDirectory() as root:
    for quantize in names.CACHE_QUANTIZE:
      sizes = cache.topk_sizes(quantize, vocab, k)
      row = {'vocab': vocab, 'k': k, 'storage': quantize, **sizes,
             'reader_tokens_per_s': reader_tokens_per_s(vocab, k, quantize,
                                                        iters, root)}
      row.update(errors(vocab, k, int(quantize[1:]), 'linear')
                 if quantize != 'none' else {'kl': 0.0,
                                             'weighted_abs_log_error': 0.0})
      out.append(row)
    out.append({'vocab': vocab, 'k': k, 'storage': 'q8 sqrt',
                **cache.topk_sizes('q8', vocab, k),
                'reader_tokens_per_s': None, **errors(vocab, k, 8, 'sqrt')})
  base = out[0]['reader_tokens_per_s']
  for row in out:
    speed = row['reader_tokens_per_s']
    row['reader_vs_float32'] = speed / base if speed else None
  return out


def markdown(rows) -> str:
  lines = ['| V | k | storage | bytes/token | bytes/stored logit | KL(p ‖ p^) '
           '| p-weighted abs log error | reader tokens/s | reader vs float32 |',
           '|---|---|---|---|---|---|---|---|---|']
  fmt = lambda x, spec: '-' if x is None else format(x, spec)
  for r in rows:
    lines.append(
        f"| {r['vocab']:,} | {r['k']} | {r['storage']} | "
        f"{r['bytes_per_token']} | {r['bytes_per_stored_logit']:.2f} | "
        f"{r['kl']:.1e} | {r['weighted_abs_log_error']:.1e} | "
        f"{fmt(r['reader_tokens_per_s'], ',.0f')} | "
        f"{fmt(r['reader_vs_float32'], '.2f')} |")
  return '\n'.join(lines)


def main(_):
  rows = [r for v in FLAGS.vocabs.split(',')
          for r in bench(int(v), FLAGS.k, FLAGS.iters)]
  print(markdown(rows))
  if FLAGS.out:
    os.makedirs(FLAGS.out, exist_ok=True)
    with open(os.path.join(FLAGS.out, 'topk_cache_results.json'), 'w') as f:
      json.dump(rows, f, indent=2)


if __name__ == '__main__':
  define_flags()
  app.run(main)
