"""Losses between intermediate features: maps (NHWC, or NWC for 1-D maps)
and a language model's hidden states [B, T, D].

Values per position: the elementwise losses (`hint`, `vid`, the `hidden_*`
ones) keep every axis but the channels ([B, *spatial], [B, T]); those that
normalise or correlate over a map's positions return one value per example
([B]). Where two maps differ in spatial size, the larger is average-pooled to
the smaller (`match_spatial`).
"""
import jax
import jax.numpy as jnp
import numpy as np

from kd.losses import divergences
from kd.losses import norms


def _f32(x):
  return jnp.asarray(x).astype(jnp.float32)


def _pool_to(x, size):
  """Average-pools the spatial axes of x (N, *spatial, C) down to `size`."""
  shape = [x.shape[0]]
  for big, small in zip(x.shape[1:-1], size):
    if big % small:
      raise ValueError(f'cannot pool spatial size {big} to {small}: not a '
                       'multiple')
    shape += [small, big // small]
  x = x.reshape(shape + [x.shape[-1]])
  return jnp.mean(x, axis=tuple(range(2, 2 * len(size) + 1, 2)))


def adaptive_pool(x, size):
  """Average-pools the spatial axes of x (N, *spatial, C) to `size` in
  PyTorch's adaptive bins: output i of an axis of length n averages inputs
  floor(i n / size) .. ceil((i + 1) n / size) - 1 (any sizes)."""
  for axis, out in enumerate(size, start=1):
    n = x.shape[axis]
    bins = np.zeros((out, n), np.float32)
    for i in range(out):
      lo, hi = (i * n) // out, -((-(i + 1) * n) // out)
      bins[i, lo:hi] = 1.0 / (hi - lo)
    x = jnp.moveaxis(jnp.tensordot(bins, x, axes=(1, axis)), 0, axis)
  return x


def match_spatial(student_feat, teacher_feat):
  """Pools the larger of two maps to the other's spatial size."""
  s_size, t_size = student_feat.shape[1:-1], teacher_feat.shape[1:-1]
  if s_size == t_size:
    return student_feat, teacher_feat
  small = tuple(min(a, b) for a, b in zip(s_size, t_size))
  return _pool_to(student_feat, small), _pool_to(teacher_feat, small)


def _teacher(x):
  return jax.lax.stop_gradient(_f32(x))


def hint(student_feat, teacher_feat):
  """FitNets hint (Romero et al., 2015): mean_c (s_c - t_c)^2 per position.

  The student map must already have the teacher's channels (the learnable
  regressor that maps it there is an adapter, not part of this function).
  """
  s, t = match_spatial(_f32(student_feat), _teacher(teacher_feat))
  return norms.mse(s, t)


def _attention(f, p):
  """Channel-mean of f^p, flattened over positions, L2-normalised."""
  a = jnp.mean(f ** p, axis=-1).reshape(f.shape[0], -1)
  return norms.normalize(a, 1)


def attention_transfer(student_feat, teacher_feat, p: float = 2):
  """Attention transfer (Zagoruyko & Komodakis, ICLR 2017).

  A(f) = normalize(mean_c f^p); per example, L = mean over positions of
  (A(s) - A(t))^2. Channel counts may differ.
  """
  s, t = match_spatial(_f32(student_feat), _teacher(teacher_feat))
  return norms.mse(_attention(s, p), _attention(t, p))


def factor_transfer(student_factor, teacher_factor, p1: float = 2,
                    p2: float = 1):
  """Factor transfer (Kim et al., NeurIPS 2018), as in the CRD benchmark.

  Factors mapped like attention maps with power p1, then per example
  L = mean over positions of |A(s) - A(t)|^p2 (p2 = 1: L1).
  """
  s, t = match_spatial(_f32(student_factor), _teacher(teacher_factor))
  diff = jnp.abs(_attention(s, p1) - _attention(t, p1))
  return jnp.mean(diff if p2 == 1 else diff ** p2, -1)


def activation_boundary(student_feat, teacher_feat, margin: float = 1.0):
  """Activation boundaries (Heo et al., AAAI 2019), the alternative L2 form of
  the CRD benchmark code, on pre-activation maps (the student's through the
  AB connector, so both have the teacher's channels):
    L = sum over an example's neurons of [ (s + m)^2 1(s > -m, t <= 0)
                                          + (s - m)^2 1(s <= m, t > 0) ],
  i.e. each student neuron is pushed past the margin m on the side where
  the teacher's neuron is active (t > 0) or not.
  """
  s, t = match_spatial(_f32(student_feat), _teacher(teacher_feat))
  on = t > 0
  loss = ((s + margin) ** 2 * ((s > -margin) & ~on)
          + (s - margin) ** 2 * ((s <= margin) & on))
  return jnp.sum(loss.reshape(loss.shape[0], -1), -1)


def nst(student_feat, teacher_feat):
  """Neuron selectivity transfer (Huang & Wang, 2017).

  Each channel's spatial vector is L2-normalised; with the polynomial kernel
  K(a, b) = (a . b)^2 between channels, per example
  L = mean K(t, t) + mean K(s, s) - 2 mean K(s, t), the means over channel
  pairs. Channel counts may differ.
  """
  s, t = match_spatial(_f32(student_feat), _teacher(teacher_feat))

  def channels(f):
    f = f.reshape(f.shape[0], -1, f.shape[-1]).transpose(0, 2, 1)
    return norms.normalize(f, 2)

  s, t = channels(s), channels(t)
  k = lambda a, b: jnp.mean(jnp.einsum('nip,njp->nij', a, b) ** 2, (1, 2))
  return k(t, t) + k(s, s) - 2.0 * k(s, t)


def vid(student_pred_mean, teacher_feat, log_scale, eps: float = 1e-5):
  """Variational information distillation (Ahn et al., CVPR 2019).

  Gaussian negative log-likelihood of the teacher map under a mean predicted
  from the student (by a learnable regressor) and a learned per-channel
  variance var = softplus(log_scale) + eps:
  L = mean_c 0.5 * ((t - mu)^2 / var + log var) per position.
  """
  mu, t = match_spatial(_f32(student_pred_mean), _teacher(teacher_feat))
  var = jax.nn.softplus(_f32(log_scale)) + eps
  return jnp.mean(0.5 * ((t - mu) ** 2 / var + jnp.log(var)), -1)


def hidden_mse(student_hidden, teacher_hidden):
  """Hidden-state matching, per token: mean_d (h_s - h_t)^2 for hidden states
  [B, T, D] of equal width (a learnable projection of the student's, the
  'linear' adapter, where they differ; TinyBERT, Jiao et al., 2020)."""
  s, t = _f32(student_hidden), _teacher(teacher_hidden)
  return norms.mse(s, t)


def hidden_cosine(student_hidden, teacher_hidden):
  """Cosine hidden-state loss, per token: 1 - cos(h_s, h_t) for hidden states
  [B, T, D] of equal width (DistilBERT, Sanh et al., 2019); the norms are
  floored, so zero vectors give 1, not NaN."""
  s = norms.normalize(_f32(student_hidden))
  t = norms.normalize(_teacher(teacher_hidden))
  return 1.0 - jnp.sum(s * t, -1)


def _log_probs(probs):
  """log p in float32, floored at the smallest normal float so that a zero
  probability (a masked key) gives a finite log and no NaN gradient."""
  return jnp.log(jnp.maximum(_f32(probs), jnp.finfo(jnp.float32).tiny))


def attention_kl(student_attention, teacher_attention):
  """Attention-distribution transfer (MiniLM, Wang et al., 2020), per query
  position: for attention probabilities A [B, H, T, T] (the encoder's
  `attn<i>` features, each row a distribution over the keys),

    L[b, t] = (1 / H) sum_h KL(A_t[b, h, t] || A_s[b, h, t])
            = (1 / H) sum_h sum_k A_t log(A_t / A_s),

  the teacher's distribution first, averaged over heads (both models need
  the same heads and length). TinyBERT (Jiao et al., 2020) instead takes the
  MSE of the unnormalised attention scores, which kd's features do not
  expose; this is MiniLM's KL. Keys masked in both (padding) have zero
  probability and add nothing."""
  log_p = _log_probs(jax.lax.stop_gradient(_f32(teacher_attention)))
  return jnp.mean(divergences.kl(log_p, _log_probs(student_attention)), 1)


def _value_relation(values, key_mask):
  """log softmax_k(v_q . v_k / sqrt(d)) per head: [B, T, H, D] -> [B, H, T, T]."""
  v = _f32(values)
  scores = jnp.einsum('bqhd,bkhd->bhqk', v, v) / jnp.sqrt(
      jnp.float32(v.shape[-1]))
  if key_mask is not None:
    scores = jnp.where(jnp.asarray(key_mask, bool)[:, None, None], scores,
                       jnp.finfo(jnp.float32).min)
  return jax.nn.log_softmax(scores)


def value_relation(student_values, teacher_values, key_mask=None):
  """Value-relation transfer (MiniLM, Wang et al., 2020), per query position:
  with each model's attention values V [B, T, H, D] (the encoder's
  `value<i>` features, `return_values=True`), per head
  VR = softmax(V V^T / sqrt(D)) [B, H, T, T], and

    L[b, t] = (1 / H) sum_h KL(VR_t[b, h, t] || VR_s[b, h, t]),

  the teacher's relation first, averaged over heads. The head sizes D may
  differ (MiniLM's smaller student); heads and lengths must match.
  `key_mask` [B, T] (1 for real tokens) leaves padded keys out of the
  softmax; without it every position is a key."""
  s_shape, t_shape = np.shape(student_values), np.shape(teacher_values)
  if len(s_shape) != 4 or s_shape[:3] != t_shape[:3]:
    raise ValueError(f'value_relation needs values [batch, length, heads, '
                     f'head_size] with the same batch, length and heads; got '
                     f'student {s_shape}, teacher {t_shape}')
  log_q = _value_relation(student_values, key_mask)
  log_p = _value_relation(jax.lax.stop_gradient(teacher_values), key_mask)
  return jnp.mean(divergences.kl(log_p, log_q), 1)


def fsp_matrix(bottom, top):
  """FSP ("flow of solution procedure") matrix of two maps of one model:
  G[i, j] = mean_p top[p, i] bottom[p, j] per example, [B, C_top, C_bot],
  the larger map average-pooled to the smaller's spatial size."""
  bottom, top = match_spatial(_f32(bottom), _f32(top))
  n = bottom.shape[0]
  b = bottom.reshape(n, -1, bottom.shape[-1])
  t = top.reshape(n, -1, top.shape[-1])
  return jnp.einsum('npi,npj->nij', t, b) / b.shape[1]


def fsp(student_feats, teacher_feats):
  """FSP (Yim et al., CVPR 2017), as in the CRD benchmark code: for maps
  f_1 .. f_k of each model (a term naming k outputs, comma-separated),
  per example L = sum_{i<k} mean_{a,b} (G_s^i - G_t^i)[a, b]^2 with
  G^i = `fsp_matrix`(f_i, f_{i+1}). Student and teacher maps need equal
  channels (the FSP matrices' shapes).
  """
  fsp_s = [fsp_matrix(a, b) for a, b in zip(student_feats, student_feats[1:])]
  fsp_t = [fsp_matrix(_teacher(a), _teacher(b))
           for a, b in zip(teacher_feats, teacher_feats[1:])]
  return sum(norms.mse(s, t, (1, 2)) for s, t in zip(fsp_s, fsp_t))


def ofd_margin(mean, std):
  """OFD's margin per channel: m = E[x | x < 0] for x ~ N(mean, std^2),
  m = mean - std phi(mean / std) / Phi(-mean / std), and -3 std where
  Phi(-mean / std) <= 0.001 (hardly any negative response; the reference
  code's cut-off). std is floored at 1e-6 (a constant channel)."""
  mean, std = _f32(mean), jnp.maximum(jnp.abs(_f32(std)), 1e-6)
  ratio = mean / std
  tail = jax.scipy.stats.norm.cdf(-ratio)
  m = mean - std * jax.scipy.stats.norm.pdf(ratio) / jnp.maximum(tail, 1e-3)
  return jnp.where(tail > 1e-3, m, -3.0 * std)


def ofd(student_feat, teacher_feat, margin):
  """Overhaul of feature distillation (Heo et al., ICCV 2019), the partial
  L2 on pre-ReLU maps (the student's through a connector to the teacher's
  channels). With the teacher's target t' = max(t, m) (margin m < 0 per
  channel, `ofd_margin`), per example
    L = sum over positions and channels of (s - t')^2 1(s > t' or t > 0):
  no loss where both responses are negative and the student's is already
  below the target, since the ReLU erases the difference.
  """
  s, t = match_spatial(_f32(student_feat), _teacher(teacher_feat))
  target = jnp.maximum(t, _f32(margin))
  loss = (s - target) ** 2 * ((s > target) | (t > 0))
  return jnp.sum(loss.reshape(loss.shape[0], -1), -1)


def hcl(student_feats, teacher_feats, levels=(4, 2, 1)):
  """Hierarchical context loss of review KD (Chen et al., CVPR 2021), as in
  the reference code: for each pair of maps (s, t) of equal shape, per
  example, l(s, t) = mean (s - t)^2 at full size and, for each size l in
  `levels` below the map's height, (s, t) average-pooled to l x l with
  weights 1/2, 1/4, ...; the weighted sum divided by the sum of the weights.
  L = sum over the pairs. Vectors [B, C] count as 1 x 1 maps.
  """
  total = 0.0
  for s, t in zip(student_feats, teacher_feats):
    s, t = _f32(s), _teacher(t)
    if s.ndim == 2:
      s, t = s[:, None, None], t[:, None, None]
    mse = lambda a, b: norms.mse(a.reshape(a.shape[0], -1),
                                 b.reshape(b.shape[0], -1))
    loss, weight, weights = mse(s, t), 1.0, 1.0
    for size in levels:
      if size >= s.shape[1]:
        continue
      weight /= 2.0
      shape = (size,) * (s.ndim - 2)
      loss = loss + weight * mse(adaptive_pool(s, shape),
                                 adaptive_pool(t, shape))
      weights += weight
    total = total + loss / weights
  return total
