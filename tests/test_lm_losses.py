"""The language-model objectives against independent NumPy versions, with
token masks, the memory-lean chunked path, and the hidden-state terms."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd import adapters, losses, steps

R = np.random.default_rng(0)
B, T, V = 2, 5, 11
S, TE = R.normal(size=(B, T, V)) * 2, R.normal(size=(B, T, V)) * 2
MASK = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.float32)


def softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def kl(p, q):
  return np.sum(p * (np.log(p) - np.log(q)), -1)


def np_topk(s, t, k, temp):
  idx = np.argsort(-t, -1)[..., :k]
  p = softmax(np.take_along_axis(t, idx, -1) / temp)
  log_q = np.log(softmax(s / temp))
  return np.sum(p * (np.log(p) - np.take_along_axis(log_q, idx, -1)), -1)


def per_token(name, s, t, temp, **kw):
  """The NumPy value of each divergence at every position."""
  p, q = softmax(t / temp), softmax(s / temp)
  if name == 'forward_kl':
    return kl(p, q)
  if name == 'reverse_kl':
    return kl(q, p)
  if name == 'generalized_jsd':
    b = kw['beta']
    m = b * p + (1 - b) * q
    return b * kl(p, m) + (1 - b) * kl(q, m)
  if name == 'tvd':
    return 0.5 * np.abs(p - q).sum(-1)
  if name == 'skew_kl':
    return kl(p, kw['alpha'] * p + (1 - kw['alpha']) * q)
  if name == 'skew_reverse_kl':
    return kl(q, kw['alpha'] * q + (1 - kw['alpha']) * p)
  if name == 'topk_kl':
    return np_topk(s, t, kw['k'], temp)
  raise KeyError(name)


CASES = [('forward_kl', {}), ('reverse_kl', {}),
         ('generalized_jsd', {'beta': 0.5}), ('generalized_jsd', {'beta': 0.2}),
         ('tvd', {}), ('skew_kl', {'alpha': 0.1}),
         ('skew_reverse_kl', {'alpha': 0.3}), ('topk_kl', {'k': 4})]


@pytest.mark.parametrize('name,kw', CASES)
@pytest.mark.parametrize('temperature', [1.0, 2.5])
def test_matches_numpy_over_unmasked_tokens(name, kw, temperature):
  fn = losses.get(name)
  want = per_token(name, S, TE, temperature, **kw)
  got = fn(S, TE, temperature=temperature, **kw, mask=MASK)
  assert got.shape == () and got.dtype == jnp.float32
  np.testing.assert_allclose(float(got), (want * MASK).sum() / MASK.sum(),
                             rtol=2e-5, atol=1e-7)
  # No mask: the mean over every token. Per position: [B, T].
  np.testing.assert_allclose(float(fn(S, TE, temperature=temperature, **kw)),
                             want.mean(), rtol=2e-5)
  values = getattr(losses.divergences, name)(S, TE, temperature, **kw)
  assert values.shape == (B, T)
  np.testing.assert_allclose(values, want, rtol=2e-4, atol=1e-6)


@pytest.mark.parametrize('name,kw', CASES)
def test_masked_tokens_do_not_count_and_all_masked_is_zero(name, kw):
  fn = losses.get(name)
  noisy_s, noisy_t = S.copy(), TE.copy()
  noisy_s[MASK == 0] = R.normal(size=noisy_s[MASK == 0].shape) * 10
  noisy_t[MASK == 0] = R.normal(size=noisy_t[MASK == 0].shape) * 10
  np.testing.assert_allclose(float(fn(noisy_s, noisy_t, **kw, mask=MASK)),
                             float(fn(S, TE, **kw, mask=MASK)), rtol=1e-6)
  zeros = np.zeros_like(MASK)
  value, grad = jax.value_and_grad(lambda s: fn(s, TE, **kw, mask=zeros))(
      jnp.asarray(S, jnp.float32))
  assert float(value) == 0.0 and np.all(np.asarray(grad) == 0)


@pytest.mark.parametrize('name,kw', CASES)
def test_gradient_reaches_only_the_student(name, kw):
  fn = losses.get(name)
  g_s, g_t = jax.grad(lambda a, b: fn(a, b, **kw, mask=MASK), argnums=(0, 1))(
      jnp.asarray(S, jnp.float32), jnp.asarray(TE, jnp.float32))
  assert np.all(np.asarray(g_t) == 0)
  # The gradient is the slope of the NumPy loss (float64 central
  # difference) along a random direction.
  v = R.normal(size=S.shape)
  np_loss = lambda s: (per_token(name, s, TE, 1.0, **kw) * MASK).sum() / (
      MASK.sum())
  slope = (np_loss(S + 1e-4 * v) - np_loss(S - 1e-4 * v)) / 2e-4
  assert float(np.sum(np.asarray(g_s) * v)) == pytest.approx(slope, rel=1e-3)
  # Masked tokens get no gradient.
  assert np.all(np.asarray(g_s)[MASK == 0] == 0)


@pytest.mark.parametrize('name,kw', CASES)
def test_classifier_logits_work_too(name, kw):
  s, t = S[:, 0], TE[:, 0]  # [B, V]
  want = per_token(name, s, t, 2.0, **kw).mean()
  np.testing.assert_allclose(
      float(losses.get(name)(s, t, temperature=2.0, **kw)), want,
      rtol=2e-5)


def test_zero_when_student_equals_teacher():
  for name, kw in CASES:
    if name != 'topk_kl':
      assert abs(float(losses.get(name)(TE, TE, **kw, mask=MASK))) < 1e-5, name
  # The truncated teacher against its own full softmax: -log(top-k mass).
  mass = np.sort(softmax(TE), -1)[..., -4:].sum(-1)
  np.testing.assert_allclose(losses.divergences.topk_kl(TE, TE, k=4),
                             -np.log(mass), rtol=1e-5)


def test_limits_of_the_mixtures():
  fwd, rev = losses.get('forward_kl')(S, TE), losses.get('reverse_kl')(S, TE)
  # Skew with alpha = 0 is the plain KL; alpha = 1 compares p with itself.
  np.testing.assert_allclose(losses.get('skew_kl')(S, TE, alpha=0.0), fwd, rtol=1e-5)
  np.testing.assert_allclose(losses.get('skew_reverse_kl')(S, TE, alpha=0.0), rev,
                             rtol=1e-5)
  assert abs(float(losses.get('skew_kl')(S, TE, alpha=1.0))) < 1e-6
  # JSD_beta / beta -> forward KL as beta -> 0, / (1 - beta) -> reverse.
  eps = 1e-4
  np.testing.assert_allclose(losses.get('generalized_jsd')(S, TE, beta=eps) / eps,
                             fwd, rtol=5e-3)
  np.testing.assert_allclose(
      losses.get('generalized_jsd')(S, TE, beta=1 - eps) / eps, rev, rtol=5e-3)
  # Top-k with k = V is the forward KL.
  np.testing.assert_allclose(losses.get('topk_kl')(S, TE, k=V), fwd, rtol=1e-5)


def test_kd_is_forward_kl_times_t_squared():
  np.testing.assert_allclose(losses.get('kd')(S, TE, 3.0, mask=MASK),
                             9.0 * losses.get('forward_kl')(S, TE, 3.0,
                                                            mask=MASK),
                             rtol=1e-6)


def test_topk_from_a_cache_equals_topk_from_full_logits():
  values, indices = jax.lax.top_k(jnp.asarray(TE, jnp.float32), 3)
  want = losses.get('topk_kl')(S, TE, 2.0, k=3, mask=MASK)
  np.testing.assert_allclose(
      losses.get('topk_kl_cached')(S, (values, indices), 2.0,
                                    mask=MASK), want, rtol=1e-6)
  # Cached log-probabilities give the same renormalised teacher.
  log_p = jax.nn.log_softmax(jnp.asarray(TE, jnp.float32))
  np.testing.assert_allclose(
      losses.get('topk_kl_cached')(S, jax.lax.top_k(log_p, 3), 2.0,
                                    mask=MASK), want,
      rtol=1e-5)


@pytest.mark.parametrize('call,match', [
    (lambda: losses.get('generalized_jsd')(S, TE, beta=0.0), r'beta must be in \(0, 1\)'),
    (lambda: losses.get('generalized_jsd')(S, TE, beta=1.0), 'forward_kl and reverse_kl'),
    (lambda: losses.get('skew_kl')(S, TE, alpha=1.5), r'alpha must be in \[0, 1\]'),
    (lambda: losses.get('skew_reverse_kl')(S, TE, alpha=-0.1), 'alpha must be'),
    (lambda: losses.get('topk_kl')(S, TE, k=0), r'k must be in \[1, 11\]'),
    (lambda: losses.get('topk_kl')(S, TE, k=12), 'vocabulary size'),
    (lambda: losses.get('forward_kl')(S, TE, temperature=0.0), 'temperature must be > 0'),
    (lambda: losses.get('kd')(S, TE, -1.0), 'temperature must be > 0'),
    (lambda: losses.chunked(losses.divergences.tvd, 0), 'chunk_size must be'),
    (lambda: losses.get('forward_kl')(S, TE, mask=MASK[:, :3]),
     'cannot weight loss values'),
])
def test_bad_arguments_say_what_is_wrong(call, match):
  with pytest.raises(ValueError, match=match):
    call()


@pytest.mark.parametrize('name,kw', [('forward_kl', {}),
                                     ('generalized_jsd', {'beta': 0.3}),
                                     ('skew_reverse_kl', {'alpha': 0.1}),
                                     ('topk_kl', {'k': 3})])
@pytest.mark.parametrize('chunk_size', [2, 4, 64])  # 4 pads 10 positions.
def test_chunked_value_and_gradient_equal_the_plain_path(name, kw, chunk_size):
  fn = getattr(losses.divergences, name)
  plain = lambda s: losses.masked_mean(fn(s, TE, 1.5, **kw), MASK)
  lean = lambda s: losses.masked_mean(
      losses.chunked(fn, chunk_size)(s, TE, 1.5, **kw), MASK)
  s = jnp.asarray(S, jnp.float32)
  v1, g1 = jax.value_and_grad(plain)(s)
  v2, g2 = jax.jit(jax.value_and_grad(lean))(s)
  np.testing.assert_allclose(v2, v1, rtol=1e-5)
  np.testing.assert_allclose(g2, g1, rtol=1e-5, atol=1e-7)


def test_chunked_splits_a_cached_topk_tuple():
  cache = jax.lax.top_k(jnp.asarray(TE, jnp.float32), 3)
  fn = losses.divergences.topk_kl_cached
  np.testing.assert_allclose(losses.chunked(fn, 3)(S, cache),
                             fn(S, cache), rtol=1e-6)


D_S, D_T = 3, 4
H_S, H_T = R.normal(size=(B, T, D_T)), R.normal(size=(B, T, D_T))


def test_hidden_state_losses_per_token():
  mse = ((H_S - H_T) ** 2).mean(-1)
  cos = 1 - (H_S * H_T).sum(-1) / (np.linalg.norm(H_S, axis=-1)
                                   * np.linalg.norm(H_T, axis=-1))
  np.testing.assert_allclose(losses.features.hidden_mse(H_S, H_T), mse,
                             rtol=1e-5)
  np.testing.assert_allclose(losses.features.hidden_cosine(H_S, H_T), cos,
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(losses.get('hidden_cosine')(H_S, H_T, mask=MASK),
                             (cos * MASK).sum() / MASK.sum(), rtol=1e-5)
  g = jax.grad(lambda h: losses.get('hidden_cosine')(h, jnp.zeros((B, T, D_T))))(
      jnp.zeros((B, T, D_T)))
  assert np.isfinite(g).all()


def test_term_projects_hidden_states_and_reduces_over_the_token_mask():
  term = steps.Term('hid', 'hidden_mse', 1.0, 'hidden', 'hidden',
                    adapter='linear')
  h_s = R.normal(size=(B, T, D_S)).astype(np.float32)
  params, state = term.make_adapter().init(jax.random.key(0), h_s, H_T, 0)
  dense = params['params']
  assert dense['kernel'].shape == (D_S, D_T)
  batch = {'mask': MASK}
  value, _ = term({'hidden': h_s}, {'hidden': H_T}, batch, params, state)
  projected = h_s @ dense['kernel'] + dense['bias']
  want = ((projected - H_T) ** 2).mean(-1)
  np.testing.assert_allclose(value, (want * MASK).sum() / MASK.sum(),
                             rtol=1e-5)
  with pytest.raises(ValueError, match="widths differ: use the 'linear'"):
    losses.check_inputs('hidden_mse', (B, T, D_S), (B, T, D_T))


def test_term_on_lm_logits_is_the_masked_mean_chunked_or_not():
  want = losses.get('generalized_jsd')(S, TE, 2.0, beta=0.4, mask=MASK)
  for kwargs in ({}, {'chunk_size': 3}):
    term = steps.Term('jsd', 'generalized_jsd', 1.0,
                      kwargs={'temperature': 2.0, 'beta': 0.4, **kwargs})
    value, _ = term({'logits': S}, {'logits': TE}, {'mask': MASK})
    np.testing.assert_allclose(value, want, rtol=1e-5)
  losses.check_inputs('generalized_jsd', (B, T, V), (B, T, V))
  losses.check_inputs('topk_kl_cached', (B, T, V), (B, T, 3))
  with pytest.raises(ValueError, match='same shape'):
    losses.check_inputs('forward_kl', (B, T, V), (B, T, V + 1))
