"""Losses between student and teacher logits."""
import jax
import jax.numpy as jnp

from kd.losses import norms


def kd(student_logits, teacher_logits, temperature: float = 4.0):
  """Knowledge distillation (Hinton, Vinyals & Dean, 2015).

  L = T^2 * mean_i KL(softmax(t_i / T) || softmax(s_i / T))
    = T^2 * mean_i sum_c p_ic (log p_ic - log q_ic),
  p = softmax(t / T), q = softmax(s / T). The T^2 keeps gradient magnitudes
  comparable across temperatures. No gradient flows into the teacher.
  """
  t = jax.lax.stop_gradient(teacher_logits).astype(jnp.float32) / temperature
  s = student_logits.astype(jnp.float32) / temperature
  log_p = jax.nn.log_softmax(t)
  log_q = jax.nn.log_softmax(s)
  kl = jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)
  return temperature**2 * jnp.mean(kl)


def dkd(student_logits, teacher_logits, labels, alpha: float = 1.0,
        beta: float = 8.0, temperature: float = 4.0):
  """Decoupled KD (Zhao et al., CVPR 2022).

  With p = softmax(z / T) and target class y:
  TCKD = KL([p_t_y, 1 - p_t_y] || [p_s_y, 1 - p_s_y]) (target vs the rest),
  NCKD = KL(p_t^ || p_s^), p^ = softmax over the non-target classes
  (target logit masked with -1000, as the reference code does).
  L = T^2 * mean_i (alpha * TCKD_i + beta * NCKD_i).
  """
  t = jax.lax.stop_gradient(teacher_logits).astype(jnp.float32) / temperature
  s = student_logits.astype(jnp.float32) / temperature
  gt = jax.nn.one_hot(labels, s.shape[-1])
  p_t, p_s = jax.nn.softmax(t), jax.nn.softmax(s)
  bin_t = jnp.stack([jnp.sum(p_t * gt, -1), jnp.sum(p_t * (1 - gt), -1)], -1)
  bin_s = jnp.stack([jnp.sum(p_s * gt, -1), jnp.sum(p_s * (1 - gt), -1)], -1)
  tckd = jnp.sum(bin_t * (jnp.log(bin_t) - jnp.log(bin_s)), -1)
  log_nt = jax.nn.log_softmax(t - 1000.0 * gt)
  log_ns = jax.nn.log_softmax(s - 1000.0 * gt)
  nckd = jnp.sum(jnp.exp(log_nt) * (log_nt - log_ns), -1)
  return temperature**2 * jnp.mean(alpha * tckd + beta * nckd)


def _pearson_rows(a, b, eps: float = 1e-8):
  a = a - jnp.mean(a, axis=1, keepdims=True)
  b = b - jnp.mean(b, axis=1, keepdims=True)
  return jnp.sum(a * b, 1) / (norms.norm(a, 1) * norms.norm(b, 1) + eps)


def dist(student_logits, teacher_logits, beta: float = 1.0,
         gamma: float = 1.0, temperature: float = 1.0):
  """DIST (Huang et al., NeurIPS 2022): relations, not exact probabilities.

  p = softmax(z / T). Inter-class: 1 - mean_i pearson(p_s[i, :], p_t[i, :]);
  intra-class: 1 - mean_c pearson(p_s[:, c], p_t[:, c]).
  L = T^2 * (beta * inter + gamma * intra); 1e-8 in the cosine denominators.
  """
  t = jax.nn.softmax(
      jax.lax.stop_gradient(teacher_logits).astype(jnp.float32) / temperature)
  s = jax.nn.softmax(student_logits.astype(jnp.float32) / temperature)
  inter = 1.0 - jnp.mean(_pearson_rows(s, t))
  intra = 1.0 - jnp.mean(_pearson_rows(s.T, t.T))
  return temperature**2 * (beta * inter + gamma * intra)


def logit_mse(student_logits, teacher_logits):
  """Logit matching (Ba & Caruana, 2014): mean (s - t)^2."""
  t = jax.lax.stop_gradient(teacher_logits).astype(jnp.float32)
  return jnp.mean((student_logits.astype(jnp.float32) - t) ** 2)
