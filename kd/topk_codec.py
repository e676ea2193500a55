"""A compressed record per token of a language-model teacher's top k: its
log-probabilities quantized, their tokens bit-packed, and the tail mass.

Input per token: log-probabilities l_1..l_k at tokens i_1..i_k (distinct,
< V) and the log of the tail mass, log t = log(1 - sum_j exp(l_j)).
Stored, as one fixed-size row of bytes (so a cache memory-maps and reads
any token):
- s = max_j d_j, float16 rounded up, with d_j = max(l) - l_j >= 0;
- log t, float16;
- each d_j as a `bits`-bit code c_j of u_j = d_j / s on a grid:
  'linear': c = round(u M), 'sqrt': c = round(sqrt(u) M), M = 2^bits - 1
  (sqrt spends its levels near the maximum, where the mass is; measured
  no better than linear at k = 64, within 2x either way depending on the
  distributions: experiments/benchmark/topk_cache.py; linear is the
  default and the one a cache uses);
- the tokens, whichever is smaller for this V and k (both fixed-size):
  'packed', ceil(log2 V) bits each, in the teacher's order; or
  'elias_fano', sorted, each split into its low b = floor(log2(V / k))
  bits and a unary-coded high part (k b + k + ceil(V / 2^b) bits in all:
  about 2 + log2(V / k) bits a token; the codes follow their tokens).

Decoding gives d^_j = s u^_j and the log-probabilities
  l^_j = -d^_j - logsumexp_j(-d^_j) + log(1 - t^),
so the k decoded probabilities and the tail sum to 1 (the maximum itself is
not stored: the tail fixes the level). The error is bounded per token by
`max_error`: |d^_j - d_j| <= e, hence |l^_j - l_j| <= 2 e + |log(1 - t^) -
log(1 - t)|, the last from log t's float16 rounding (relative 2^-11).
"""
import math

import numpy as np

GRIDS = ('linear', 'sqrt')
# The tail's log is kept in [-100, -2^-10]: exp(-100) is no mass, and a
# tail of (rounded) 1 would leave the top k none.
_LOG_TAIL_RANGE = (-100.0, -2.0 ** -10)


def index_coding(vocab_size: int, k: int) -> str:
  """'packed' or 'elias_fano', whichever stores k of V tokens in fewer
  bits."""
  return ('elias_fano' if _elias_fano_bits(vocab_size, k)
          < k * _index_width(vocab_size) else 'packed')


def record_bytes(vocab_size: int, k: int, bits: int) -> int:
  """Bytes per token: the two float16 and the bits of codes and tokens."""
  coding = index_coding(vocab_size, k)
  index_bits = (_elias_fano_bits(vocab_size, k) if coding == 'elias_fano'
                else k * _index_width(vocab_size))
  return 4 + math.ceil((k * bits + index_bits) / 8)


def max_error(scale, bits: int, grid: str):
  """The bound e on |d^_j - d_j| for a token of stored scale s: half a
  step, s / (2 M), on the linear grid; s (1 / M + 1 / (4 M^2)) on the sqrt
  grid (|sqrt(u) - c / M| <= 1 / (2 M) and d = s u)."""
  m = 2 ** bits - 1
  scale = np.asarray(scale, np.float64)
  return scale / (2 * m) if grid == 'linear' else scale * (1 / m + 1 / (4 * m * m))


def encode(log_probs, indices, log_tail, vocab_size: int, bits: int = 8,
           grid: str = 'linear') -> np.ndarray:
  """[..., k] log-probabilities and tokens, [...] log tail masses -> uint8
  records [..., record_bytes(V, k, bits)]."""
  _check(bits, grid)
  lead, k = np.shape(log_probs)[:-1], np.shape(log_probs)[-1]
  l = np.asarray(log_probs, np.float64).reshape(-1, k)
  idx = np.asarray(indices, np.int64).reshape(-1, k)
  coding = index_coding(vocab_size, k)
  if coding == 'elias_fano':
    order = np.argsort(idx, -1)
    idx, l = (np.take_along_axis(x, order, -1) for x in (idx, l))
  d = l.max(-1, keepdims=True) - l
  scale = _round_up_f16(d.max(-1))
  u = np.clip(d / np.maximum(scale, np.finfo(np.float16).tiny)[:, None], 0, 1)
  m = 2 ** bits - 1
  codes = np.rint((u if grid == 'linear' else np.sqrt(u)) * m).astype(np.int64)
  index_part = (_elias_fano(idx, vocab_size) if coding == 'elias_fano'
                else _bits(idx, _index_width(vocab_size)))
  body = np.packbits(np.concatenate([_bits(codes, bits), index_part], -1), -1)
  tail = np.clip(np.asarray(log_tail, np.float64).reshape(-1),
                 *_LOG_TAIL_RANGE).astype('<f2')
  head = np.stack([scale.astype('<f2'), tail], -1).view(np.uint8)
  out = np.concatenate([head, body], -1)
  return out.reshape(*lead, out.shape[-1])


def decode(records, vocab_size: int, k: int, bits: int = 8,
           grid: str = 'linear'):
  """uint8 records [..., B] -> (log-probabilities [..., k] float32, tokens
  [..., k] int32, log tail [...] float32)."""
  _check(bits, grid)
  records = np.asarray(records, np.uint8)
  lead = records.shape[:-1]
  r = records.reshape(-1, records.shape[-1])
  head = np.ascontiguousarray(r[:, :4]).view('<f2').astype(np.float64)
  scale, log_tail = head[:, 0], head[:, 1]
  body = np.unpackbits(r[:, 4:], -1)
  m = 2 ** bits - 1
  c = _ints(body[:, :k * bits], k, bits) / m
  d = scale[:, None] * (c if grid == 'linear' else c * c)
  if index_coding(vocab_size, k) == 'elias_fano':
    idx = _from_elias_fano(body[:, k * bits:], vocab_size, k)
  else:
    w = _index_width(vocab_size)
    idx = _ints(body[:, k * bits:k * bits + k * w], k, w)
  neg = -d
  top = neg.max(-1, keepdims=True)
  lse = top + np.log(np.exp(neg - top).sum(-1, keepdims=True))
  l = neg - lse + _log1mexp(log_tail)[:, None]
  shape = lambda x, *tail: x.reshape(*lead, *tail)
  return (shape(l.astype(np.float32), k), shape(idx.astype(np.int32), k),
          shape(log_tail.astype(np.float32)))


def _check(bits, grid):
  if grid not in GRIDS:
    raise ValueError(f'unknown grid {grid!r}; valid: {", ".join(GRIDS)}')
  if not 1 <= bits <= 16:
    raise ValueError(f'bits must be in [1, 16], got {bits}')


def _log1mexp(x):
  """log(1 - exp(x)) for x < 0, accurate at both ends."""
  x = np.asarray(x, np.float64)
  return np.where(x > -math.log(2), np.log(-np.expm1(np.minimum(x, -1e-300))),
                  np.log1p(-np.exp(x)))


def _round_up_f16(x):
  """float16 >= x (so u = d / s stays within [0, 1])."""
  h = x.astype(np.float16)
  return np.where(h.astype(np.float64) < x,
                  np.nextafter(h, np.float16(np.inf)), h).astype(np.float64)


def _index_width(vocab_size: int) -> int:
  return max(1, math.ceil(math.log2(vocab_size)))


def _low_width(vocab_size: int, k: int) -> int:
  return max(0, int(math.floor(math.log2(vocab_size / k))))


def _high_length(vocab_size: int, k: int) -> int:
  return k + ((vocab_size - 1) >> _low_width(vocab_size, k)) + 1


def _elias_fano_bits(vocab_size: int, k: int) -> int:
  return k * _low_width(vocab_size, k) + _high_length(vocab_size, k)


def _bits(values, width: int):
  """[N, m] non-negative ints -> [N, m * width] bits, most significant
  first."""
  shifts = np.arange(width - 1, -1, -1)
  return ((values[..., None] >> shifts) & 1).astype(np.uint8).reshape(
      len(values), -1)


def _ints(bits, m: int, width: int):
  """Inverse of `_bits` (a product with the powers of 2 in the narrowest
  unsigned type that holds them: 2-3x faster than in int64)."""
  if width == 0:
    return np.zeros((len(bits), m), np.int64)
  dtype = np.uint16 if width <= 16 else np.uint64
  return (bits.reshape(len(bits), m, width)
          @ (1 << np.arange(width - 1, -1, -1)).astype(dtype)).astype(np.int64)


def _elias_fano(sorted_idx, vocab_size: int):
  """Sorted tokens [N, k] -> bits [N, k b + high length]: the low b bits of
  each, then a bit at (x_j >> b) + j for each j."""
  n, k = sorted_idx.shape
  low = _low_width(vocab_size, k)
  high = np.zeros((n, _high_length(vocab_size, k)), np.uint8)
  np.put_along_axis(high, (sorted_idx >> low) + np.arange(k), 1, -1)
  return np.concatenate([_bits(sorted_idx & ((1 << low) - 1), low), high], -1)


def _from_elias_fano(bits, vocab_size: int, k: int):
  n, low = len(bits), _low_width(vocab_size, k)
  lows = _ints(bits[:, :k * low], k, low)
  high = bits[:, k * low:k * low + _high_length(vocab_size, k)]
  rows, cols = np.nonzero(high)
  if len(cols) != n * k:
    raise ValueError(f'damaged top-k record: {len(cols)} token bits set in '
                     f'{n} tokens, expected {k} each')
  return ((cols.reshape(n, k) - np.arange(k)) << low) | lows
