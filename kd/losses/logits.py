"""Losses between student and teacher logits, per position (logits [..., C]
-> values [...]) except `dist`, whose intra-class term relates the positions
of a batch."""
import jax
import jax.numpy as jnp
import optax

from kd.losses import divergences
from kd.losses import norms


def zscore(logits, eps: float = 1e-7):
  """Logit standardisation (Sun et al., CVPR 2024), per position:
  z' = (z - mean_c z) / (eps + std_c z), std with Bessel's correction as in
  the paper's code. Invariant to shifting and scaling a position's logits,
  so the temperature sets the softmax's sharpness alone (the paper's base
  temperature on CIFAR-100 is 2, with a KD weight of 9)."""
  z = jnp.asarray(logits).astype(jnp.float32)
  mean = jnp.mean(z, -1, keepdims=True)
  std = jnp.std(z, -1, keepdims=True, ddof=1)
  return (z - mean) / (eps + std)


def kd(student_logits, teacher_logits, temperature: float = 4.0,
       standardize: bool = False):
  """Knowledge distillation (Hinton, Vinyals & Dean, 2015).

  L = T^2 KL(softmax(t / T) || softmax(s / T))
    = T^2 sum_c p_c (log p_c - log q_c),
  p = softmax(t / T), q = softmax(s / T): `divergences.forward_kl` times T^2,
  which keeps gradient magnitudes comparable across temperatures. No
  gradient flows into the teacher. `standardize`: both logits z-scored
  first (`zscore`, Sun et al., CVPR 2024).
  """
  if standardize:
    student_logits, teacher_logits = _standardized(student_logits,
                                                   teacher_logits)
  return temperature**2 * divergences.forward_kl(student_logits,
                                                 teacher_logits, temperature)


def _standardized(student_logits, teacher_logits):
  return (zscore(student_logits),
          zscore(jax.lax.stop_gradient(teacher_logits)))


def dkd(student_logits, teacher_logits, labels, alpha: float = 1.0,
        beta: float = 8.0, temperature: float = 4.0,
        standardize: bool = False):
  """Decoupled KD (Zhao et al., CVPR 2022).

  With p = softmax(z / T) and target class y:
  TCKD = KL([p_t_y, 1 - p_t_y] || [p_s_y, 1 - p_s_y]) (target vs the rest),
  NCKD = KL(p_t^ || p_s^), p^ = softmax over the non-target classes
  (target logit masked with -1000, as the reference code does).
  L = T^2 (alpha TCKD + beta NCKD). `standardize`: both logits z-scored
  first (`zscore`, Sun et al., CVPR 2024).
  """
  if standardize:
    student_logits, teacher_logits = _standardized(student_logits,
                                                   teacher_logits)
  t = divergences.tempered(jax.lax.stop_gradient(teacher_logits), temperature)
  s = divergences.tempered(student_logits, temperature)
  gt = jax.nn.one_hot(labels, s.shape[-1])
  p_t, p_s = jax.nn.softmax(t), jax.nn.softmax(s)
  bin_t = jnp.stack([jnp.sum(p_t * gt, -1), jnp.sum(p_t * (1 - gt), -1)], -1)
  bin_s = jnp.stack([jnp.sum(p_s * gt, -1), jnp.sum(p_s * (1 - gt), -1)], -1)
  # The binary teacher distribution is at hand as probabilities.
  tckd = optax.losses.kl_divergence(jnp.log(bin_s), bin_t)
  nckd = divergences.kl(jax.nn.log_softmax(t - 1000.0 * gt),
                        jax.nn.log_softmax(s - 1000.0 * gt))
  return temperature**2 * (alpha * tckd + beta * nckd)


def _pearson_rows(a, b, eps: float = 1e-8):
  a = a - jnp.mean(a, axis=1, keepdims=True)
  b = b - jnp.mean(b, axis=1, keepdims=True)
  return jnp.sum(a * b, 1) / (norms.norm(a, 1) * norms.norm(b, 1) + eps)


def dist(student_logits, teacher_logits, beta: float = 1.0,
         gamma: float = 1.0, temperature: float = 1.0):
  """DIST (Huang et al., NeurIPS 2022): relations, not exact probabilities.
  A batch-level scalar (the intra-class term compares positions).

  p = softmax(z / T) per position (all positions of [B, T, C] logits taken
  as rows). Inter-class: 1 - mean_i pearson(p_s[i, :], p_t[i, :]);
  intra-class: 1 - mean_c pearson(p_s[:, c], p_t[:, c]).
  L = T^2 * (beta * inter + gamma * intra); 1e-8 in the cosine denominators.
  """
  rows = lambda z: z.reshape(-1, z.shape[-1])
  t = divergences.tempered_softmax(
      rows(jax.lax.stop_gradient(teacher_logits)), temperature)
  s = divergences.tempered_softmax(rows(student_logits), temperature)
  inter = 1.0 - jnp.mean(_pearson_rows(s, t))
  intra = 1.0 - jnp.mean(_pearson_rows(s.T, t.T))
  return temperature**2 * (beta * inter + gamma * intra)


def logit_mse(student_logits, teacher_logits):
  """Logit matching (Ba & Caruana, 2014): mean_c (s_c - t_c)^2."""
  t = jax.lax.stop_gradient(teacher_logits).astype(jnp.float32)
  return norms.mse(student_logits.astype(jnp.float32), t)
