"""Cross-tokenizer losses against NumPy: ULD between vocabularies of
different sizes, both ways, with masks and finite gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd import losses

R = np.random.default_rng(0)
B, T = 2, 4
MASK = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], np.float32)


def softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def np_uld(s, t, temp):
  p = -np.sort(-softmax(t / temp), -1)
  q = -np.sort(-softmax(s / temp), -1)
  width = max(p.shape[-1], q.shape[-1])
  p = np.concatenate([p, np.zeros(p.shape[:-1] + (width - p.shape[-1],))], -1)
  q = np.concatenate([q, np.zeros(q.shape[:-1] + (width - q.shape[-1],))], -1)
  return np.abs(p - q).sum(-1)


@pytest.mark.parametrize('vs,vt,temperature', [(7, 13, 1.0), (13, 7, 2.0),
                                                (9, 9, 1.0)])
def test_uld_matches_numpy_both_ways(vs, vt, temperature):
  s, t = R.normal(size=(B, T, vs)) * 2, R.normal(size=(B, T, vt)) * 2
  want = np_uld(s, t, temperature)
  values = losses.cross_tokenizer.uld(s, t, temperature)
  assert values.shape == (B, T) and values.dtype == jnp.float32
  np.testing.assert_allclose(values, want, rtol=1e-5, atol=1e-6)
  uld = losses.get('uld')
  np.testing.assert_allclose(
      float(uld(s, t, mask=MASK, temperature=temperature)),
      (want * MASK).sum() / MASK.sum(), rtol=1e-5)
  np.testing.assert_allclose(float(uld(s, t, temperature)), want.mean(),
                             rtol=1e-5)
  # Only the student's logits get a gradient, finite everywhere.
  gs, gt = jax.grad(lambda a, b: uld(a, b, temperature, mask=MASK),
                    argnums=(0, 1))(jnp.asarray(s), jnp.asarray(t))
  assert np.isfinite(gs).all() and np.abs(gs[0, :2]).sum() > 0
  assert not np.abs(gs[0, 2:]).any() and not np.abs(gt).any()


def test_uld_is_zero_for_permuted_vocabularies_and_counts_padding():
  """ULD ignores which token holds the mass: a permutation (and padding the
  shorter vector with zero-probability tokens) costs nothing; a teacher
  spreading mass over more tokens does."""
  t = R.normal(size=(3, 6))
  s = np.concatenate([t[:, ::-1], np.full((3, 4), -1e9)], -1)
  np.testing.assert_allclose(losses.cross_tokenizer.uld(s, t), 0, atol=1e-6)
  flat = np.zeros((1, 4))  # p = 1/4 each vs q = (1, 0, ...): 3/4 + 3/4.
  peaked = np.array([[50.0, 0, 0, 0, 0, 0]])
  np.testing.assert_allclose(losses.cross_tokenizer.uld(peaked, flat), 1.5,
                             rtol=1e-5)


def test_uld_pairs_sequences_of_any_vocabulary_and_length():
  losses.check_inputs('uld', (2, 8, 259), (2, 5, 300))
  with pytest.raises(ValueError, match=r"loss 'uld' cannot pair student "
                     r'\(2, 8, 259\) with teacher \(3, 5, 300\): batch sizes'):
    losses.check_inputs('uld', (2, 8, 259), (3, 5, 300))
  with pytest.raises(ValueError, match='needs language-model logits'):
    losses.check_inputs('uld', (2, 259), (2, 300))


def test_span_log_probs_sum_the_tokens_of_each_span():
  logits = R.normal(size=(2, 6, 5))
  targets = R.integers(0, 5, size=(2, 6))
  start = np.array([[0, 2, 5], [1, 1, 3]])
  end = np.array([[2, 5, 6], [4, 1, 6]])  # An empty span: log 1 = 0.
  lp = np.log(softmax(logits / 2.0))
  tok = np.take_along_axis(lp, targets[..., None], -1)[..., 0]
  want = [[tok[b, s:e].sum() for s, e in zip(start[b], end[b])]
          for b in range(2)]
  np.testing.assert_allclose(losses.cross_tokenizer.span_log_probs(
      logits, targets, start, end, 2.0), want, rtol=1e-5, atol=1e-6)


def np_hybrid(s, t, ms, mt, temp, spans=None):
  p, q = softmax(t / temp), softmax(s / temp)
  us = [i for i in range(s.shape[-1]) if i not in ms]
  ut = [i for i in range(t.shape[-1]) if i not in mt]
  pm, qm = p[..., mt], q[..., ms]
  pc = pm / pm.sum(-1, keepdims=True)
  qc = qm / qm.sum(-1, keepdims=True)
  out = pm.sum(-1) * np.sum(pc * np.log(pc / qc), -1) + np_uld_probs(
      p[..., ut], q[..., us])
  if spans is not None:
    lq, lp, whole = spans
    P, Q = np.exp(lp), np.exp(lq)
    out = out + whole * (P * np.log(P / Q)
                         + (1 - P) * np.log((1 - P) / (1 - Q)))
  return out


def np_uld_probs(p, q):
  p, q = -np.sort(-p, -1), -np.sort(-q, -1)
  w = max(p.shape[-1], q.shape[-1])
  pad = lambda x: np.concatenate(
      [x, np.zeros(x.shape[:-1] + (w - x.shape[-1],))], -1)
  return np.abs(pad(p) - pad(q)).sum(-1)


@pytest.mark.parametrize('wp,wq', [(5, 11), (11, 5), (0, 6), (6, 0)])
def test_sorted_l1_of_the_top_m_is_the_padded_full_sort(wp, wq):
  """Only each side's m = min(widths) largest entries are sorted; value
  and gradient equal the padded full sort's."""
  p = jnp.asarray(softmax(R.normal(size=(3, wp + 1)))[:, :wp])
  q = jnp.asarray(softmax(R.normal(size=(3, wq + 1)))[:, :wq])

  def full(p, q):
    w = max(p.shape[-1], q.shape[-1])
    pad = lambda x: jnp.pad(-jnp.sort(-x, -1), [(0, 0), (0, w - x.shape[-1])])
    return jnp.sum(jnp.abs(pad(p) - pad(q)), -1)

  fn = losses.cross_tokenizer.sorted_l1
  np.testing.assert_allclose(fn(p, q), np_uld_probs(np.asarray(p),
                                                    np.asarray(q)), rtol=1e-6)
  for got, want in zip(jax.grad(lambda a, b: fn(a, b).sum(), (0, 1))(p, q),
                       jax.grad(lambda a, b: full(a, b).sum(), (0, 1))(p, q)):
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize('vs,vt', [(7, 12), (12, 7)])
def test_hybrid_kl_matches_numpy(vs, vt):
  s, t = R.normal(size=(B, T, vs)) * 2, R.normal(size=(B, T, vt)) * 2
  ms = np.array([4, 0, 2]) if vs < vt else np.array([1, 6, 3])
  mt = np.array([1, 3, 5])
  spans = (-R.uniform(0.1, 4, (B, T)), -R.uniform(0.1, 4, (B, T)),
           (R.uniform(size=(B, T)) > 0.3).astype(np.float32))
  fn = losses.cross_tokenizer.hybrid_kl
  for sp in (None, spans):
    np.testing.assert_allclose(fn(s, t, ms, mt, sp, 1.5),
                               np_hybrid(s, t, ms, mt, 1.5, sp), rtol=1e-5,
                               atol=1e-6)
  # Every token of the smaller side matched: one side has no rest.
  every = np.arange(min(vs, vt))
  np.testing.assert_allclose(fn(s, t, every, every),
                             np_hybrid(s, t, every, every, 1.0), rtol=1e-5,
                             atol=1e-6)
  mean = losses.get('hybrid_kl')
  g = jax.grad(lambda a: mean(a, t, ms, mt, spans, mask=MASK))(jnp.asarray(s))
  assert np.isfinite(g).all() and not np.abs(g[0, 2:]).any()


def test_hybrid_kl_is_the_kl_when_the_vocabularies_are_one():
  """Identical vocabularies, every token matched, no span: the forward KL."""
  s, t = R.normal(size=(B, T, 9)), R.normal(size=(B, T, 9))
  every = np.arange(9)
  np.testing.assert_allclose(
      losses.cross_tokenizer.hybrid_kl(s, t, every, every, temperature=2.0),
      losses.divergences.forward_kl(s, t, 2.0), rtol=1e-5, atol=1e-6)


def test_hybrid_kl_asks_a_fully_matched_student_for_the_teachers_matched_part():
  """A byte-level student has every token matched: the hybrid is least
  (zero gradient) where its distribution is the teacher's given the
  matched tokens, not where it puts the teacher's other mass on tokens it
  never emits."""
  t = R.normal(size=(3, 12))
  ms, mt = np.arange(5), np.array([7, 1, 3, 10, 4])
  log_pm = t[:, mt] - np.log(np.exp(t[:, mt]).sum(-1, keepdims=True))
  g = jax.grad(lambda s: losses.cross_tokenizer.hybrid_kl(
      s, t, ms, mt).sum())(jnp.asarray(log_pm))
  np.testing.assert_allclose(g, 0, atol=1e-6)
