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


def _angles(e):
  """cos of the angle at j between i and k, for all triplets (i, j, k)."""
  diff = _normalize_rows(e[None, :, :] - e[:, None, :])
  return jnp.einsum('jid,jkd->jik', diff, diff)


def rkd(student_emb, teacher_emb, distance_weight: float = 25.0,
        angle_weight: float = 50.0):
  """Relational KD (Park et al., CVPR 2019).

  Distance term: pairwise distances divided by their mean over distinct
  pairs; angle term: cosines of the angles of all triplets. Each compared
  with smooth-L1 (Huber, delta 1, mean); L = w_d * L_d + w_a * L_a.
  """
  s, t = _flat(student_emb), _flat(teacher_emb, teacher=True)
  loss_d = _smooth_l1(_normalized_distances(s), _normalized_distances(t))
  loss_a = _smooth_l1(_angles(s), _angles(t))
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
