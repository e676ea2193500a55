"""Losses on relations between the examples of a batch."""
import jax
import jax.numpy as jnp

from kd.losses import norms


def _flat(x, teacher=False):
  x = jnp.asarray(x).astype(jnp.float32)
  x = jax.lax.stop_gradient(x) if teacher else x
  return x.reshape(x.shape[0], -1)


def _normalize_rows(x, eps=1e-12):
  return norms.normalize(x, -1, eps)


def similarity_preserving(student_feat, teacher_feat):
  """Similarity-preserving KD (Tung & Mori, ICCV 2019).

  G = F F^T over the batch (features flattened), rows L2-normalised;
  L = ||G_t - G_s||_F^2 / batch^2. Feature sizes may differ.
  """
  s, t = _flat(student_feat), _flat(teacher_feat, teacher=True)
  g_s, g_t = _normalize_rows(s @ s.T), _normalize_rows(t @ t.T)
  return jnp.sum((g_t - g_s) ** 2) / s.shape[0] ** 2


def _smooth_l1(a, b):
  d = jnp.abs(a - b)
  return jnp.mean(jnp.where(d < 1.0, 0.5 * d ** 2, d - 0.5))


def _normalized_distances(e):
  """Pairwise Euclidean distances over their mean across distinct pairs."""
  sq = jnp.sum(e ** 2, axis=1)
  d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * e @ e.T, 1e-12)
  off = 1.0 - jnp.eye(e.shape[0])
  d = jnp.sqrt(d2) * off
  # Collapsed embeddings (all distances 0) give 0, not NaN.
  return d / jnp.maximum(jnp.sum(d) / jnp.sum(off), 1e-12)


def _angle_parts(e):
  """What the angles are made of, in O(B^2 D): the Gram matrix G of the
  centred embeddings (angles do not change under translation; centring
  keeps the subtractions below small), its diagonal, and 1 / |e_i - e_j|
  with |e_i - e_j|^2 = G_ii - 2 G_ij + G_jj, set to 0 where e_i = e_j."""
  same = jnp.all(e[:, None, :] == e[None, :, :], axis=-1)
  c = e - jnp.mean(e, axis=0)
  g = c @ c.T
  sq = jnp.diag(g)
  d2 = sq[:, None] + sq[None, :] - 2.0 * g
  # norms.norm's floors: finite values and gradients where rounding gives
  # d2 <= 0; both branches finite, so no NaN reaches the gradient.
  inv = 1.0 / jnp.maximum(jnp.sqrt(jnp.maximum(d2, 1e-30)), 1e-12)
  return g, sq, jnp.where(same, 0.0, inv)


def _angles_at(parts, j):
  """cos of the angle at j between i and k, [i, k], in O(B^2):
  <e_i - e_j, e_k - e_j> = G_ik - G_ij - G_jk + G_jj over the two lengths.

  Where e_i = e_j or e_k = e_j (i = j, k = j, duplicate embeddings) it is
  exactly 0, as the difference form gives it, with a zero gradient (the
  difference form's x / max(|x|, 1e-12) has slope 1e12 there). Rounding can
  push a near-degenerate triplet's cosine past +-1: it is clipped.
  """
  g, sq, inv = parts
  dots = g - g[j][:, None] - g[j][None, :] + sq[j]
  return jnp.clip(dots * inv[j][:, None] * inv[j][None, :], -1.0, 1.0)


def _angles(e):
  """cos of the angle at j between i and k, for all triplets, [j, i, k]."""
  parts = _angle_parts(e)
  return jax.vmap(lambda j: _angles_at(parts, j))(jnp.arange(e.shape[0]))


def rkd(student_emb, teacher_emb, distance_weight: float = 25.0,
        angle_weight: float = 50.0):
  """Relational KD (Park et al., CVPR 2019).

  Distance term: pairwise distances divided by their mean over distinct
  pairs; angle term: cosines of the angles of all triplets. Each compared
  with smooth-L1 (Huber, delta 1, mean); L = w_d * L_d + w_a * L_a.
  """
  s, t = _flat(student_emb), _flat(teacher_emb, teacher=True)
  loss_d = _smooth_l1(_normalized_distances(s), _normalized_distances(t))
  p_s, p_t = _angle_parts(s), _angle_parts(t)

  # One apex j at a time, recomputed in the backward pass: B x B slices stay
  # in cache where the whole B^3 tensor and its gradients would not.
  @jax.checkpoint
  def at(j):
    return _smooth_l1(_angles_at(p_s, j), _angles_at(p_t, j))

  loss_a = jnp.mean(jax.lax.map(at, jnp.arange(s.shape[0])))
  return distance_weight * loss_d + angle_weight * loss_a


def pkt(student_emb, teacher_emb, eps: float = 1e-7):
  """Probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018).

  Vectors normalised as x / (|x| + eps); cosine-similarity matrices mapped to
  [0, 1] by (s + 1) / 2 and row-normalised into conditional probabilities;
  L = mean over all entries of p_t * log((p_t + eps) / (p_s + eps)).
  """
  def probabilities(x):
    x = x / (norms.norm(x, 1, keepdims=True) + eps)
    sim = (x @ x.T + 1.0) / 2.0
    return sim / jnp.sum(sim, axis=1, keepdims=True)

  p_s = probabilities(_flat(student_emb))
  p_t = probabilities(_flat(teacher_emb, teacher=True))
  return jnp.mean(p_t * jnp.log((p_t + eps) / (p_s + eps)))


def correlation_congruence(student_emb, teacher_emb):
  """Correlation congruence (Peng et al., ICCV 2019), in the CRD benchmark's
  form: with d = |f_s - f_t|, L = mean_i sum_k d[i, k] * d[i + 1, k]."""
  d = jnp.abs(_flat(student_emb) - _flat(teacher_emb, teacher=True))
  return jnp.mean(jnp.sum(d[:-1] * d[1:], axis=1))
