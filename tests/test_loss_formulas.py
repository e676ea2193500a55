"""Each loss against an independent NumPy version of its published formula,
plus properties (zero at equality, no teacher gradient, permutations)."""
import inspect
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd import losses

R = np.random.default_rng(0)
B, C = 6, 5
S_LOG, T_LOG = R.normal(size=(B, C)) * 2, R.normal(size=(B, C)) * 2
LABELS = R.integers(0, C, size=B)
S_MAP, T_MAP = R.normal(size=(B, 4, 4, 3)), R.normal(size=(B, 4, 4, 3))
S_EMB, T_EMB = R.normal(size=(B, 7)), R.normal(size=(B, 7))


def softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def kl_rows(p, q):
  return np.sum(p * (np.log(p) - np.log(q)), -1)


def np_kd(s, t, T):
  return T**2 * kl_rows(softmax(t / T), softmax(s / T)).mean()


def np_dkd(s, t, y, alpha, beta, T):
  total = 0.0
  for i in range(len(s)):
    ps, pt = softmax(s[i] / T), softmax(t[i] / T)
    bs = np.array([ps[y[i]], 1 - ps[y[i]]])
    bt = np.array([pt[y[i]], 1 - pt[y[i]]])
    tckd = np.sum(bt * np.log(bt / bs))
    keep = np.arange(len(ps)) != y[i]
    ns, nt = softmax(s[i][keep] / T), softmax(t[i][keep] / T)
    nckd = np.sum(nt * np.log(nt / ns))
    total += alpha * tckd + beta * nckd
  return T**2 * total / len(s)


def np_pearson(a, b):
  a, b = a - a.mean(), b - b.mean()
  return a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-8)


def np_dist(s, t, beta, gamma, T):
  ps, pt = softmax(s / T), softmax(t / T)
  inter = 1 - np.mean([np_pearson(ps[i], pt[i]) for i in range(len(ps))])
  intra = 1 - np.mean([np_pearson(ps[:, c], pt[:, c])
                       for c in range(ps.shape[1])])
  return T**2 * (beta * inter + gamma * intra)


def np_at_map(f, p):
  a = (f**p).mean(-1).reshape(len(f), -1)
  return a / np.linalg.norm(a, axis=1, keepdims=True)


def np_sp(s, t):
  s, t = s.reshape(len(s), -1), t.reshape(len(t), -1)
  gs, gt = s @ s.T, t @ t.T
  gs /= np.linalg.norm(gs, axis=1, keepdims=True)
  gt /= np.linalg.norm(gt, axis=1, keepdims=True)
  return np.sum((gt - gs)**2) / len(s)**2


def huber(a, b):
  d = np.abs(a - b)
  return np.mean(np.where(d < 1, 0.5 * d**2, d - 0.5))


def np_rkd(s, t, wd, wa):
  def dist(e):
    n = len(e)
    d = np.array([[np.linalg.norm(e[i] - e[j]) for j in range(n)]
                  for i in range(n)])
    return d / (d.sum() / (n * n - n))

  def angles(e):
    n = len(e)
    out = np.zeros((n, n, n))
    for i in range(n):
      for j in range(n):
        for k in range(n):
          u, v = e[i] - e[j], e[k] - e[j]
          nu, nv = np.linalg.norm(u), np.linalg.norm(v)
          out[j, i, k] = 0 if nu == 0 or nv == 0 else u @ v / (nu * nv)
    return out

  return wd * huber(dist(s), dist(t)) + wa * huber(angles(s), angles(t))


def np_pkt(s, t, eps=1e-7):
  def prob(x):
    x = x / (np.linalg.norm(x, axis=1, keepdims=True) + eps)
    sim = (x @ x.T + 1) / 2
    return sim / sim.sum(1, keepdims=True)
  ps, pt = prob(s), prob(t)
  return np.mean(pt * np.log((pt + eps) / (ps + eps)))


def np_cc(s, t):
  d = np.abs(s - t)
  return np.mean([d[i] @ d[i + 1] for i in range(len(d) - 1)])


def np_nst(s, t):
  def chan(f):
    f = f.reshape(len(f), -1, f.shape[-1]).transpose(0, 2, 1)
    return f / np.linalg.norm(f, axis=2, keepdims=True)
  s, t = chan(s), chan(t)
  k = lambda a, b: np.einsum('nip,njp->nij', a, b)**2
  return k(t, t).mean() + k(s, s).mean() - 2 * k(s, t).mean()


def np_vid(mu, t, log_scale, eps=1e-5):
  var = np.log1p(np.exp(log_scale)) + eps
  return np.mean(0.5 * ((t - mu)**2 / var + np.log(var)))


def np_ab(s, t, m):
  total = 0.0
  for sv, tv in zip(s.ravel(), t.ravel()):
    if tv > 0 and sv <= m:
      total += (sv - m)**2
    elif tv <= 0 and sv > -m:
      total += (sv + m)**2
  return total / s.shape[0]


def zscore(z):
  return (z - z.mean(-1, keepdims=True)) / (
      1e-7 + z.std(-1, ddof=1, keepdims=True))


def np_fsp(s_maps, t_maps):
  def gram(bot, top):  # bot's spatial size is twice top's here.
    n, h, w, c = bot.shape
    bot = bot.reshape(n, h // 2, 2, w // 2, 2, c).mean((2, 4))
    b, t = bot.reshape(n, -1, bot.shape[-1]), top.reshape(n, -1, top.shape[-1])
    return np.stack([t[i].T @ b[i] / b.shape[1] for i in range(n)])
  total = 0.0
  for i in range(len(s_maps) - 1):
    total += np.mean((gram(s_maps[i], s_maps[i + 1])
                      - gram(t_maps[i], t_maps[i + 1]))**2)
  return total


def np_normal_tail_mean(mu, sigma):
  """E[x | x < 0], x ~ N(mu, sigma^2), or -3 sigma if P(x < 0) <= 0.001."""
  out = []
  for m, s in zip(mu, sigma):
    cdf = 0.5 * (1 + math.erf(-m / s / math.sqrt(2)))
    pdf = math.exp(-(m / s)**2 / 2) / math.sqrt(2 * math.pi)
    out.append(m - s * pdf / cdf if cdf > 0.001 else -3 * s)
  return np.array(out)


def np_ofd(s, t, margin):
  m = np.broadcast_to(margin, s.shape)
  loss = ((s - m)**2 * ((s > m) & (t <= m))
          + (s - t)**2 * ((s > t) & (t > m) & (t <= 0))
          + (s - t)**2 * (t > 0))
  return loss.reshape(len(s), -1).sum(-1).mean()


def np_hcl(s_maps, t_maps):
  def pool(x, l):
    n, h, w, c = x.shape
    return x.reshape(n, l, h // l, l, w // l, c).mean((2, 4))
  total = 0.0
  for fs, ft in zip(s_maps, t_maps):
    loss, cnt, tot = np.mean((fs - ft)**2), 1.0, 1.0
    for l in (4, 2, 1):
      if l >= fs.shape[1]:
        continue
      cnt /= 2
      loss += np.mean((pool(fs, l) - pool(ft, l))**2) * cnt
      tot += cnt
    total += loss / tot
  return total


S_MAPS = (R.normal(size=(B, 8, 8, 3)), R.normal(size=(B, 4, 4, 5)),
          R.normal(size=(B, 2, 2, 4)))
T_MAPS = tuple(R.normal(size=m.shape) for m in S_MAPS)
MARGIN = -np.abs(R.normal(size=3)) - 0.1

CASES = {
    'kd': (lambda: losses.get('kd')(S_LOG, T_LOG, 3.0), lambda: np_kd(S_LOG, T_LOG, 3.0)),
    'dkd': (lambda: losses.get('dkd')(S_LOG, T_LOG, LABELS, 1.0, 8.0, 4.0),
            lambda: np_dkd(S_LOG, T_LOG, LABELS, 1.0, 8.0, 4.0)),
    'dist': (lambda: losses.get('dist')(S_LOG, T_LOG, 2.0, 1.5, 4.0),
             lambda: np_dist(S_LOG, T_LOG, 2.0, 1.5, 4.0)),
    'logit_mse': (lambda: losses.get('logit_mse')(S_LOG, T_LOG),
                  lambda: np.mean((S_LOG - T_LOG)**2)),
    'hint': (lambda: losses.get('hint')(S_MAP, T_MAP),
             lambda: np.mean((S_MAP - T_MAP)**2)),
    'attention_transfer': (
        lambda: losses.get('attention_transfer')(S_MAP, T_MAP, 2),
        lambda: np.mean((np_at_map(S_MAP, 2) - np_at_map(T_MAP, 2))**2)),
    'factor_transfer': (
        lambda: losses.get('factor_transfer')(S_MAP, T_MAP, 2, 1),
        lambda: np.mean(np.abs(np_at_map(S_MAP, 2) - np_at_map(T_MAP, 2)))),
    'similarity_preserving': (lambda: losses.get('similarity_preserving')(S_MAP, T_MAP),
                              lambda: np_sp(S_MAP, T_MAP)),
    'rkd': (lambda: losses.get('rkd')(S_EMB, T_EMB, 25.0, 50.0),
            lambda: np_rkd(S_EMB, T_EMB, 25.0, 50.0)),
    'pkt': (lambda: losses.get('pkt')(S_EMB, T_EMB), lambda: np_pkt(S_EMB, T_EMB)),
    'correlation_congruence': (lambda: losses.get('correlation_congruence')(S_EMB, T_EMB),
                               lambda: np_cc(S_EMB, T_EMB)),
    'nst': (lambda: losses.get('nst')(S_MAP, T_MAP), lambda: np_nst(S_MAP, T_MAP)),
    'vid': (lambda: losses.get('vid')(S_MAP, T_MAP, np.linspace(-1, 1, 3)),
            lambda: np_vid(S_MAP, T_MAP, np.linspace(-1, 1, 3))),
    'activation_boundary': (
        lambda: losses.get('activation_boundary')(S_MAP, T_MAP, 0.5),
        lambda: np_ab(S_MAP, T_MAP, 0.5)),
    'kd_standardized': (
        lambda: losses.get('kd')(S_LOG, T_LOG, 2.0, standardize=True),
        lambda: np_kd(zscore(S_LOG), zscore(T_LOG), 2.0)),
    'dkd_standardized': (
        lambda: losses.get('dkd')(S_LOG, T_LOG, LABELS, 1.0, 8.0, 2.0,
                           standardize=True),
        lambda: np_dkd(zscore(S_LOG), zscore(T_LOG), LABELS, 1.0, 8.0, 2.0)),
    'fsp': (lambda: losses.get('fsp')(S_MAPS[1:], T_MAPS[1:]),
            lambda: np_fsp(S_MAPS[1:], T_MAPS[1:])),
    'ofd': (lambda: losses.get('ofd')(S_MAP, T_MAP, MARGIN),
            lambda: np_ofd(S_MAP, T_MAP, MARGIN)),
    'hcl': (lambda: losses.get('hcl')(S_MAPS, T_MAPS),
            lambda: np_hcl(S_MAPS, T_MAPS)),
}


@pytest.mark.parametrize('name', sorted(CASES))
def test_matches_numpy_formula(name):
  ours, ref = CASES[name]
  value = ours()
  assert value.dtype == jnp.float32 and value.shape == ()
  np.testing.assert_allclose(float(value), ref(), rtol=2e-4, atol=1e-6)


PAIRS = {  # name: (student, teacher, extra kwargs)
    'kd': (S_LOG, T_LOG, {'temperature': 2.0}),
    'dkd': (S_LOG, T_LOG, {'labels': LABELS}),
    'dist': (S_LOG, T_LOG, {}), 'logit_mse': (S_LOG, T_LOG, {}),
    'hint': (S_MAP, T_MAP, {}), 'attention_transfer': (S_MAP, T_MAP, {}),
    'factor_transfer': (S_MAP, T_MAP, {}), 'nst': (S_MAP, T_MAP, {}),
    'similarity_preserving': (S_MAP, T_MAP, {}), 'rkd': (S_EMB, T_EMB, {}),
    'pkt': (S_EMB, T_EMB, {}), 'correlation_congruence': (S_EMB, T_EMB, {}),
    'ofd': (S_MAP, T_MAP, {'margin': MARGIN}),
    'fsp': (S_MAPS[1:], T_MAPS[1:], {}), 'hcl': (S_MAPS, T_MAPS, {}),
}


def test_activation_boundary_is_zero_past_the_margin_on_the_teachers_side():
  t = np.sign(T_MAP)
  assert float(losses.get('activation_boundary')(2.0 * t, T_MAP, 1.0)) == 0.0
  # At the boundary (s = 0) every neuron costs m^2.
  np.testing.assert_allclose(
      float(losses.get('activation_boundary')(np.zeros_like(T_MAP), T_MAP, 0.5)),
      0.25 * T_MAP[0].size, rtol=1e-6)


@pytest.mark.parametrize('name', sorted(PAIRS))
def test_zero_when_student_equals_teacher(name):
  _, t, kw = PAIRS[name]
  fn = losses.get(name)
  assert abs(float(fn(t, t, **kw))) < 1e-5


@pytest.mark.parametrize('name', sorted(PAIRS))
def test_no_gradient_reaches_the_teacher_and_student_gets_one(name):
  s, t, kw = PAIRS[name]
  fn = losses.get(name)
  f32 = lambda x: jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), x)
  g_s, g_t = jax.grad(lambda a, b: fn(a, b, **kw), argnums=(0, 1))(
      f32(s), f32(t))
  g_s, g_t = (np.concatenate([np.ravel(g) for g in jax.tree.leaves(x)])
              for x in (g_s, g_t))
  assert np.all(g_t == 0.0)
  # The student's gradient is the loss's slope: along a random direction v,
  # <g, v> equals the central difference (f(s + e v) - f(s - e v)) / 2e.
  s32 = f32(s)
  v = jax.tree.map(lambda a: jnp.asarray(R.normal(size=a.shape), jnp.float32),
                   s32)
  e = 1e-2
  shift = lambda k: jax.tree.map(lambda a, d: a + k * e * d, s32, v)
  slope = (float(fn(shift(1), f32(t), **kw)) -
           float(fn(shift(-1), f32(t), **kw))) / (2 * e)
  along = float(np.dot(g_s, np.concatenate(
      [np.ravel(d) for d in jax.tree.leaves(v)])))
  assert along == pytest.approx(slope, rel=5e-2, abs=1e-4) and along != 0


@pytest.mark.parametrize('name', ['kd', 'logit_mse', 'hint',
                                  'attention_transfer', 'dist',
                                  'similarity_preserving', 'rkd', 'pkt', 'nst'])
def test_invariant_to_a_joint_batch_permutation(name):
  s, t, kw = PAIRS[name]
  perm = R.permutation(B)
  fn = losses.get(name)
  np.testing.assert_allclose(float(fn(s[perm], t[perm], **kw)),
                             float(fn(s, t, **kw)), rtol=1e-5)


def test_correlation_congruence_depends_on_batch_order():
  perm = np.array([0, 2, 1, 3, 4, 5])
  assert float(losses.get('correlation_congruence')(S_EMB[perm], T_EMB[perm])) != \
      pytest.approx(float(losses.get('correlation_congruence')(S_EMB, T_EMB)))


def test_larger_map_is_average_pooled_to_the_smaller():
  big = R.normal(size=(2, 8, 8, 3))
  pooled = big.reshape(2, 4, 2, 4, 2, 3).mean((2, 4))
  np.testing.assert_allclose(float(losses.get('hint')(big, T_MAP[:2])),
                             np.mean((pooled - T_MAP[:2])**2), rtol=1e-5)
  # Attention transfer pairs maps of different widths as well.
  t = R.normal(size=(2, 4, 4, 16))
  np.testing.assert_allclose(
      float(losses.get('attention_transfer')(big, t)),
      np.mean((np_at_map(pooled, 2) - np_at_map(t, 2))**2), rtol=1e-5)


def test_crd_nce_formula():
  scores = np.abs(R.normal(size=(3, 5))) + 0.1
  n = 50
  m, pn = 4, 1 / 50
  ref = -(np.log(scores[:, 0] / (scores[:, 0] + m * pn + 1e-7)).sum() +
          np.log(m * pn / (scores[:, 1:] + m * pn + 1e-7)).sum()) / 3
  np.testing.assert_allclose(float(losses.get('crd')(scores, scores, n)), 2 * ref,
                             rtol=1e-5)


def test_gradients_stay_finite_for_collapsed_features():
  zeros = jnp.zeros((4, 6))
  for name in ('rkd', 'pkt', 'similarity_preserving'):
    g = jax.grad(lambda s, n=name: losses.get(n)(s, jnp.ones((4, 6))))(zeros)
    assert np.isfinite(g).all(), name
  g = jax.grad(lambda s: losses.get('dist')(s, jnp.ones((4, 5))))(jnp.zeros((4, 5)))
  assert np.isfinite(g).all()


def test_unknown_loss_lists_the_valid_ones():
  with pytest.raises(ValueError, match=r"unknown loss 'kdd'; valid losses: .*"
                     r"attention_transfer.*rkd"):
    losses.get('kdd')


@pytest.mark.parametrize('name,s,t,match', [
    ('kd', (8, 10), (8, 100), 'same shape'),
    ('hint', (8, 4, 4, 16), (8, 4, 4, 32), "channels differ.*'regressor'"),
    ('attention_transfer', (8, 6, 6, 16), (8, 4, 4, 32), 'not a multiple'),
    ('nst', (8, 16), (8, 4, 4, 32), 'feature maps'),
    ('correlation_congruence', (8, 64), (8, 128), 'equal feature sizes'),
    ('rkd', (8, 64), (4, 64), 'batch sizes differ')])
def test_check_inputs_names_the_loss_and_shapes(name, s, t, match):
  with pytest.raises(ValueError, match=rf"loss '{name}' cannot pair student "
                     rf"\{re.escape(str(s))[1:]}.*{match}"):
    losses.check_inputs(name, s, t)


def test_check_inputs_accepts_what_the_losses_take():
  losses.check_inputs('attention_transfer', (8, 8, 8, 16), (8, 4, 4, 64))
  losses.check_inputs('rkd', (8, 64), (8, 256))
  losses.check_inputs('kd', (8, 10), (8, 10))


def test_activation_boundary_gradient_reaches_only_the_student():
  g_s, g_t = jax.grad(
      lambda a, b: losses.get('activation_boundary')(a, b, 0.5), argnums=(0, 1))(
          jnp.asarray(S_MAP, jnp.float32), jnp.asarray(T_MAP, jnp.float32))
  assert np.all(np.asarray(g_t) == 0.0)
  # The gradient is the slope of the NumPy formula along a random direction.
  v = R.normal(size=S_MAP.shape)
  slope = (np_ab(S_MAP + 1e-4 * v, T_MAP, 0.5) -
           np_ab(S_MAP - 1e-4 * v, T_MAP, 0.5)) / 2e-4
  assert float(np.sum(np.asarray(g_s) * v)) == pytest.approx(slope, rel=1e-3)


PER_POSITION_SHAPES = {  # name: values' shape for the PAIRS inputs.
    'kd': (B,), 'dkd': (B,), 'logit_mse': (B,), 'hint': (B, 4, 4),
    'attention_transfer': (B,), 'factor_transfer': (B,), 'nst': (B,),
    'ofd': (B,), 'fsp': (B,), 'hcl': (B,)}


@pytest.mark.parametrize('name', sorted(PAIRS))
def test_scalar_form_is_the_mean_of_the_per_position_values(name):
  s, t, kw = PAIRS[name]
  spec = losses.spec(name)
  assert spec.per_position == (name in PER_POSITION_SHAPES)
  assert spec.labels == (name == 'dkd')
  if not spec.per_position:  # Batch-level: the scalar itself.
    assert spec.mean is spec.fn and spec.fn(s, t, **kw).shape == ()
    return
  values = spec.fn(s, t, **kw)
  assert values.shape == PER_POSITION_SHAPES[name]
  np.testing.assert_allclose(float(losses.get(name)(s, t, **kw)),
                             float(np.mean(values)), rtol=1e-6)
  # A mask over the examples weighs them: the second half counts twice.
  mask = np.repeat([1.0, 2.0], B // 2)
  want = np.sum(mask * np.mean(values.reshape(B, -1), -1)) / mask.sum()
  np.testing.assert_allclose(float(losses.get(name)(s, t, **kw, mask=mask)),
                             want, rtol=1e-6)


def test_one_name_per_loss_and_one_way_to_pass_the_mask():
  """A loss is its module's function (no scalar alias of the same name in
  `kd.losses`); every per-position loss's scalar form, classifier or
  language model, takes `mask` as the last, keyword-only argument."""
  for name, spec in losses.LOSSES.items():
    assert not hasattr(losses, name), name
    assert spec.fn.__module__.startswith('kd.losses.') or name == 'cwtm'
    if spec.per_position:
      params = list(inspect.signature(losses.get(name)).parameters.values())
      assert (params[-1].name, params[-1].kind) == (
          'mask', inspect.Parameter.KEYWORD_ONLY), name
  # The same mask, the same reduction, for [B, C] and [B, T, V] logits.
  mask = np.array([1.0, 0.0] * (B // 2))
  for name in ('kd', 'forward_kl'):
    lm = losses.get(name)(S_LOG[:, None], T_LOG[:, None], 2.0,
                          mask=mask[:, None])
    np.testing.assert_allclose(
        float(losses.get(name)(S_LOG, T_LOG, 2.0, mask=mask)), float(lm),
        rtol=1e-6)
    np.testing.assert_allclose(float(lm), float(np.sum(mask * np.asarray(
        losses.spec(name).fn(S_LOG, T_LOG, 2.0))) / mask.sum()), rtol=1e-6)


def test_register_records_what_the_step_needs_and_rejects_clashes():
  def half_kd(student_logits, teacher_logits, labels):
    del labels
    return 0.5 * losses.logits.kd(student_logits, teacher_logits)

  try:
    assert losses.register(half_kd, 'logits', labels=True) is half_kd
    spec = losses.spec('half_kd')
    assert (spec.fn, spec.mean, spec.inputs, spec.labels, spec.per_position) \
        == (half_kd, losses.get('half_kd'), 'logits', True, True)
    np.testing.assert_allclose(
        float(spec.mean(S_LOG, T_LOG, LABELS)),
        0.5 * float(losses.get('kd')(S_LOG, T_LOG)), rtol=1e-6)
    assert losses.register(half_kd, 'logits', labels=True) is half_kd
    assert losses.get('half_kd') is spec.mean
    with pytest.raises(ValueError, match="'half_kd' is already registered"):
      losses.register(lambda s, t: s, 'logits', name='half_kd')
  finally:
    losses.LOSSES.pop('half_kd', None)
  with pytest.raises(ValueError, match="unknown input kind 'logit'; valid: "
                     'logits, topk'):
    losses.register(half_kd, 'logit')


def test_cross_entropy_per_position_and_label_smoothing():
  log_q = np.log(softmax(S_LOG))
  ce = -log_q[np.arange(B), LABELS]
  np.testing.assert_allclose(losses.classification.cross_entropy(
      S_LOG, LABELS), ce, rtol=1e-5)
  q = np.full((B, C), 0.1 / C) + 0.9 * np.eye(C)[LABELS]
  np.testing.assert_allclose(float(losses.masked_mean(
      losses.classification.cross_entropy(S_LOG, LABELS, 0.1))),
                             np.mean(-(q * log_q).sum(-1)), rtol=1e-5)


def test_ofd_margin_is_the_mean_of_the_negative_tail():
  mu, sigma = np.array([-1.0, 0.0, 0.5, 4.0]), np.array([1.0, 2.0, 0.7, 1.0])
  np.testing.assert_allclose(losses.features.ofd_margin(mu, sigma),
                             np_normal_tail_mean(mu, sigma), rtol=1e-5)
  # Against sampling: the mean of the negative draws.
  x = np.random.default_rng(1).normal(0.5, 0.7, 400_000)
  np.testing.assert_allclose(float(losses.features.ofd_margin(0.5, 0.7)),
                             x[x < 0].mean(), rtol=1e-2)


def test_ofd_no_loss_where_the_relu_hides_the_difference():
  t = np.where(T_MAP > 0, T_MAP, T_MAP - 5.0)  # Negatives below the margin.
  s = np.where(T_MAP > 0, T_MAP, -10.0)  # Below the target where t < 0.
  assert float(losses.get('ofd')(s, t, MARGIN)) == 0.0
  # A student above the margin where the teacher is off costs (s - m)^2.
  off = np.where(T_MAP > 0, T_MAP, MARGIN + 1.0)
  np.testing.assert_allclose(float(losses.get('ofd')(off, t, MARGIN)),
                             np.sum(T_MAP <= 0) / B, rtol=1e-5)


def test_standardized_logits_ignore_shift_and_scale():
  for fn, kw in ((losses.get('kd'), {}), (losses.get('dkd'), {'labels': LABELS})):
    base = float(fn(S_LOG, T_LOG, standardize=True, **kw))
    moved = float(fn(3.0 * S_LOG + 1.0, 0.5 * T_LOG - 2.0, standardize=True,
                     **kw))
    np.testing.assert_allclose(moved, base, rtol=1e-4)
    assert float(fn(3.0 * S_LOG, T_LOG, **kw)) != pytest.approx(
        float(fn(S_LOG, T_LOG, **kw)))


def test_hcl_pools_any_size_like_adaptive_pooling():
  x = R.normal(size=(2, 7, 7, 3))
  pooled = losses.features.adaptive_pool(x, (4, 4))
  # PyTorch's bins for 7 -> 4: [0, 2), [1, 4), [3, 6), [5, 7).
  bins = [(0, 2), (1, 4), (3, 6), (5, 7)]
  want = np.array([[x[:, a:b, c:d].mean((1, 2)) for c, d in bins]
                   for a, b in bins]).transpose(2, 0, 1, 3)
  np.testing.assert_allclose(pooled, want, rtol=1e-5)
  # HCL on a 7x7 map: full size, then the 4x4, 2x2, 1x1 adaptive poolings
  # weighted 1/2, 1/4, 1/8, normalised by the weights' sum.
  y = R.normal(size=x.shape)
  def adaptive(z, l):
    edges = [(i * 7 // l, -(-(i + 1) * 7 // l)) for i in range(l)]
    return np.array([[z[:, a:b, c:d].mean((1, 2)) for c, d in edges]
                     for a, b in edges])
  levels = [np.mean((x - y)**2)] + [
      np.mean((adaptive(x, l) - adaptive(y, l))**2) for l in (4, 2, 1)]
  want = np.dot(levels, [1, 1 / 2, 1 / 4, 1 / 8]) / (1 + 1 / 2 + 1 / 4 + 1 / 8)
  np.testing.assert_allclose(float(losses.get('hcl')((x,), (y,))), want, rtol=1e-5)


@pytest.mark.parametrize('name,s,t,match', [
    ('fsp', (8, 4, 4, 16), (8, 4, 4, 16), 'two or more feature maps'),
    ('fsp', ((8, 4, 4, 16), (8, 2, 2, 8)), ((8, 4, 4, 16), (8, 2, 2, 4)),
     'channels differ'),
    ('kd', ((8, 10), (8, 10)), ((8, 10), (8, 10)), 'one output per model')])
def test_check_inputs_of_several_maps(name, s, t, match):
  with pytest.raises(ValueError, match=match):
    losses.check_inputs(name, s, t)
  losses.check_inputs('fsp', ((8, 4, 4, 16), (8, 2, 2, 8)),
                      ((8, 4, 4, 16), (8, 2, 2, 8)))
