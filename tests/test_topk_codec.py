"""The compressed top-k record (kd.topk_codec): it round-trips within its
stated bound, keeps the tokens exactly, and its size is the formula's."""
import math

import numpy as np
import pytest

from kd import topk_codec as codec

R = np.random.default_rng(0)


def teacher(n, vocab, k, scale=2.0):
  """Top-k log-probabilities, tokens (descending) and log tail of random
  softmaxes."""
  z = R.standard_normal((n, vocab)) * scale
  lp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  idx = np.argsort(-lp, -1)[:, :k]
  rest = lp.copy()
  np.put_along_axis(rest, idx, -np.inf, -1)
  return (np.take_along_axis(lp, idx, -1), idx,
          np.log(np.exp(rest).sum(-1)))


@pytest.mark.parametrize('vocab,k,bits,grid,coding', [
    (259, 64, 8, 'linear', 'elias_fano'), (259, 2, 8, 'linear', 'packed'),
    (32768, 64, 4, 'linear', 'elias_fano'), (1000, 16, 6, 'sqrt',
                                             'elias_fano'),
    (32768, 1, 8, 'linear', 'packed')])
def test_round_trip_within_the_stated_bound(vocab, k, bits, grid, coding):
  lp, idx, lt = teacher(300, vocab, k)
  assert codec.index_coding(vocab, k) == coding
  rec = codec.encode(lp.reshape(3, 100, k), idx.reshape(3, 100, k),
                     lt.reshape(3, 100), vocab, bits, grid)
  assert rec.dtype == np.uint8
  assert rec.shape == (3, 100, codec.record_bytes(vocab, k, bits))
  got_lp, got_idx, got_lt = codec.decode(rec, vocab, k, bits, grid)
  assert got_lt.shape == (3, 100) and got_idx.shape == (3, 100, k)
  got_lp, got_idx, got_lt = (got_lp.reshape(300, k), got_idx.reshape(300, k),
                             got_lt.reshape(300))
  if coding == 'elias_fano':  # Stored in token order.
    order = np.argsort(idx, -1)
    lp, idx = (np.take_along_axis(x, order, -1) for x in (lp, idx))
  np.testing.assert_array_equal(got_idx, idx)
  np.testing.assert_allclose(got_lt, lt, rtol=2 ** -11, atol=1e-7)
  d = lp.max(-1, keepdims=True) - lp
  got_d = got_lp.max(-1, keepdims=True) - got_lp
  scale = d.max(-1)
  bound = codec.max_error(scale * (1 + 2 ** -10), bits, grid)[:, None]
  assert (np.abs(got_d - d) <= bound + 1e-5).all()
  # The level: the decoded top k and tail sum to 1.
  np.testing.assert_allclose(np.exp(got_lp).sum(-1) + np.exp(got_lt), 1,
                             rtol=1e-5)
  tail_term = np.abs(np.log1p(-np.exp(got_lt.astype(float)))
                     - np.log1p(-np.exp(lt)))
  assert (np.abs(got_lp - lp) <= 2 * bound + tail_term[:, None] + 1e-5).all()
  if bits == 8 and k == 64:  # The figure, for the table.
    assert codec.max_error(scale, bits, grid).max() < 0.05


def test_bytes_per_token_and_per_stored_logit_at_k_64():
  # 2 float16 + 64 codes + Elias-Fano tokens (64 * 2 low bits + 129 high).
  assert codec.record_bytes(259, 64, 8) == 4 + math.ceil(
      (64 * 8 + 64 * 2 + 64 + 65) / 8) == 101
  assert codec.record_bytes(259, 64, 8) / 64 <= 2
  # V = 32k: 9 low bits; ceil(log2 V) = 15 bits packed would be 120 bytes.
  assert codec.record_bytes(32768, 64, 4) == 4 + math.ceil(
      (64 * 4 + 64 * 9 + 64 + 64) / 8) == 124
  assert codec.record_bytes(32768, 64, 4) / 64 <= 2 < codec.record_bytes(
      32768, 64, 8) / 64
  assert codec.record_bytes(32768, 1, 8) == 4 + math.ceil((8 + 15) / 8)


def test_flat_and_extreme_tokens_decode():
  # Equal log-probabilities (scale 0), a tail of almost 1 and of none.
  lp = np.log(np.array([[0.25] * 4, [0.001] * 4, [0.7, 0.2, 0.1, 1e-30]]))
  idx = np.array([[3, 1, 2, 0], [5, 6, 7, 8], [0, 258, 9, 100]])
  lt = np.log(np.array([1e-12, 0.996, 1e-50]))
  rec = codec.encode(lp, idx, lt, 259)
  got_lp, got_idx, got_lt = codec.decode(rec, 259, 4)
  assert np.isfinite(got_lp).all() and np.isfinite(got_lt).all()
  np.testing.assert_allclose(np.exp(got_lp[:2]), np.exp(lp[:2]), rtol=1e-3)
  np.testing.assert_array_equal(got_idx, np.sort(idx, -1))
  assert got_lt[2] == np.float32(np.float16(-100))


def test_bad_arguments_and_a_damaged_record_say_so():
  lp, idx, lt = teacher(4, 259, 8)
  with pytest.raises(ValueError, match="unknown grid 'log'; valid: linear, sqrt"):
    codec.encode(lp, idx, lt, 259, grid='log')
  with pytest.raises(ValueError, match=r'bits must be in \[1, 16\], got 0'):
    codec.decode(np.zeros((1, 10), np.uint8), 259, 8, bits=0)
  rec = codec.encode(lp, idx, lt, 259)
  rec[:, -3:] = 0
  with pytest.raises(ValueError, match='damaged top-k record'):
    codec.decode(rec, 259, 8)
