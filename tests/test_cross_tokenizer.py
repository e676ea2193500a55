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


@pytest.mark.parametrize('vs,vt', [(7, 13), (13, 7), (9, 9)])
@pytest.mark.parametrize('temperature', [1.0, 2.0])
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
