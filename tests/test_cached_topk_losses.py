"""The divergences on a cached top k (kd.losses.divergences: topk_kl_cached
with and without the tail bucket, reverse KL and JSD on the support)
against NumPy, masked, chunked, and from a compressed cache's records."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd import losses, topk_codec

R = np.random.default_rng(1)
B, T, V, K = 2, 5, 11, 4
S, TE = R.normal(size=(B, T, V)) * 2, R.normal(size=(B, T, V)) * 2
MASK = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.float32)


def log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def kl(log_p, log_q):
  return np.sum(np.exp(log_p) * (log_p - log_q), -1)


def cache_of(logits, k=K):
  """(top-k log-probabilities, tokens, log tail) as a cache stores them."""
  lp = log_softmax(logits)
  idx = np.argsort(-lp, -1)[..., :k]
  rest = lp.copy()
  np.put_along_axis(rest, idx, -np.inf, -1)
  with np.errstate(divide='ignore'):
    lt = np.maximum(np.log(np.exp(rest).sum(-1)), -100)
  return np.take_along_axis(lp, idx, -1), idx, lt


def np_buckets(s, cache, temp, tail):
  """NumPy (log q, log p) on the support, written from the definitions."""
  values, idx, lt = cache
  if not tail:
    return (log_softmax(np.take_along_axis(s / temp, idx, -1)),
            log_softmax(values / temp))
  q = np.exp(log_softmax(s / temp))
  qk = np.take_along_axis(q, idx, -1)
  q_b = np.concatenate([qk, 1 - qk.sum(-1, keepdims=True)], -1)
  return (np.log(q_b),
          log_softmax(np.concatenate([values, lt[..., None]], -1) / temp))


def np_loss(name, s, cache, temp, tail, beta=0.5):
  log_q, log_p = np_buckets(s, cache, temp, tail)
  if name == 'topk_kl_cached':
    if tail:
      return kl(log_p, log_q)
    p = np.exp(log_softmax(cache[0] / temp))
    log_q_full = np.take_along_axis(log_softmax(s / temp), cache[1], -1)
    return np.sum(p * (np.log(p) - log_q_full), -1)
  if name == 'topk_reverse_kl_cached':
    return kl(log_q, log_p)
  m = np.log(beta * np.exp(log_p) + (1 - beta) * np.exp(log_q))
  return beta * kl(log_p, m) + (1 - beta) * kl(log_q, m)


CACHE = cache_of(TE)
NAMES = ('topk_kl_cached', 'topk_reverse_kl_cached', 'topk_jsd_cached')


@pytest.mark.parametrize('tail', [False, True])
@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('temp', [1.0, 2.0])
def test_each_equals_numpy_per_token_and_masked(name, tail, temp):
  kw = {'beta': 0.3} if name == 'topk_jsd_cached' else {}
  want = np_loss(name, S, CACHE, temp, tail, **kw)
  fn = getattr(losses.divergences, name)
  got = fn(S, CACHE, temp, tail=tail, **kw)
  assert got.shape == (B, T)
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(
      losses.get(name)(S, CACHE, temp, tail=tail, mask=MASK, **kw),
      (want * MASK).sum() / MASK.sum(), rtol=2e-5)


def test_the_tail_bucket_over_the_whole_vocabulary_is_the_forward_kl():
  # k = V: no tail, the buckets are the vocabulary.
  full = cache_of(TE, k=V)
  np.testing.assert_allclose(
      losses.divergences.topk_kl_cached(S, full, 1.0, tail=True),
      losses.divergences.forward_kl(S, TE, 1.0), rtol=1e-5, atol=1e-6)
  # And the tail is what the bucket adds: the student's mass off the k.
  with_tail = losses.divergences.topk_kl_cached(S, CACHE, 1.0, tail=True)
  without = losses.divergences.topk_kl_cached(S, CACHE, 1.0)
  assert not np.allclose(with_tail, without)


@pytest.mark.parametrize('name', NAMES)
def test_chunked_value_and_gradient_equal_the_plain_path(name):
  fn = getattr(losses.divergences, name)
  plain = lambda s: losses.masked_mean(fn(s, CACHE, 1.5, tail=True), MASK)
  lean = lambda s: losses.masked_mean(
      losses.chunked(fn, 4)(s, CACHE, 1.5, tail=True), MASK)
  s = jnp.asarray(S, jnp.float32)
  v1, g1 = jax.value_and_grad(plain)(s)
  v2, g2 = jax.jit(jax.value_and_grad(lean))(s)
  np.testing.assert_allclose(v2, v1, rtol=1e-5)
  np.testing.assert_allclose(g2, g1, rtol=1e-5, atol=1e-7)
  assert np.isfinite(g1).all() and np.abs(g1).sum() > 0


def test_a_decoded_8_bit_cache_gives_the_float_caches_loss():
  values, idx, lt = CACHE
  got = topk_codec.decode(topk_codec.encode(values, idx, lt, V), V, K)
  for name in NAMES:
    want = losses.get(name)(S, CACHE, 1.0, tail=True, mask=MASK)
    np.testing.assert_allclose(
        losses.get(name)(S, got, 1.0, tail=True, mask=MASK), want,
        rtol=2e-2, atol=1e-3)


def test_bad_arguments_say_what_is_wrong():
  with pytest.raises(ValueError, match="tail bucket needs the teacher's tail"):
    losses.divergences.topk_reverse_kl_cached(S, CACHE[:2], tail=True)
  with pytest.raises(ValueError, match=r'beta must be in \(0, 1\), got 1'):
    losses.divergences.topk_jsd_cached(S, CACHE, beta=1)
  with pytest.raises(ValueError, match='temperature must be > 0'):
    losses.divergences.topk_jsd_cached(S, CACHE, 0.0)
  losses.check_inputs('topk_jsd_cached', (B, T, V), (B, T, K))


@pytest.mark.parametrize('temp', [1.0, 2.5])
def test_the_mixture_of_several_caches_is_the_kl_to_the_weighted_mixture(
    temp):
  """topk_mixture_kl_cached: KL(p || q) with p = sum_k w_k p~_k, each
  teacher's top k renormalised at T, tokens shared by two top k's summed:
  against a dense NumPy mixture; one teacher is topk_kl_cached, a zero
  weight drops a teacher."""
  t2 = R.normal(size=(B, T, V)) * 2
  (v1, i1, _), (v2, i2, _) = cache_of(TE), cache_of(t2)
  assert (i1[..., :, None] == i2[..., None, :]).any()  # Shared tokens.
  w = np.array([0.7, 0.3])
  both = (np.concatenate([v1, v2], -1).astype(np.float32),
          np.concatenate([i1, i2], -1))
  got = np.asarray(losses.divergences.topk_mixture_kl_cached(
      S.astype(np.float32), both, w, temp))
  p = np.zeros((B, T, V))
  for wk, v, i in ((w[0], v1, i1), (w[1], v2, i2)):
    np.put_along_axis(p, i, np.take_along_axis(p, i, -1)
                      + wk * np.exp(log_softmax(v / temp)), -1)
  log_q = log_softmax(S / temp)
  with np.errstate(divide='ignore', invalid='ignore'):
    want = np.sum(np.where(p > 0, p * (np.log(p) - log_q), 0), -1)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  one = (v1.astype(np.float32), i1)
  np.testing.assert_allclose(
      losses.divergences.topk_mixture_kl_cached(S, one, [1.0], temp),
      losses.divergences.topk_kl_cached(S, one, temp), rtol=1e-5, atol=1e-6)
  dropped = losses.divergences.topk_mixture_kl_cached(S, both, [1.0, 0.0],
                                                      temp)
  np.testing.assert_allclose(dropped, losses.divergences.topk_kl_cached(
      S, one, temp), rtol=1e-5, atol=1e-6)
  grad = jax.grad(lambda s: losses.divergences.topk_mixture_kl_cached(
      s, both, [1.0, 0.0], temp).sum())(jnp.asarray(S, jnp.float32))
  assert np.isfinite(np.asarray(grad)).all()
