"""How much each of K teachers counts: pure functions of their logits.

Every mode returns weights `w` of shape [K, B] (per teacher and example,
summing to 1 over K); the distillation target is the mixture
sum_k w_k softmax(t_k / T). Because d KL(p || q) / d s is linear in p, the
student's gradient from KL(mixture || q) equals that of sum_k w_k KL(p_k || q)
(the per-teacher weighted loss of CA-MKD and AE-KD) whenever the weights do
not depend on the student, so one form serves every mode.

The confidence and entropy modes judge teachers by their own predictions
(T = 1); the others do not look at them.
"""
import jax
import jax.numpy as jnp
import optax

from kd import teachers
from kd.losses import classification
from kd.losses import divergences

MODES = ('mean', 'fixed', 'confidence', 'entropy', 'ae_kd')


def mean(teacher_logits):
  """You et al., KDD 2017: the plain average of the teachers."""
  k, b = teacher_logits.shape[:2]
  return jnp.full((k, b), 1.0 / k)


def fixed(teacher_logits, weights):
  """Given per-teacher weights, normalised to sum to 1."""
  w = jnp.asarray(weights, jnp.float32)
  return jnp.broadcast_to((w / jnp.sum(w))[:, None], teacher_logits.shape[:2])


def confidence(teacher_logits, labels):
  """CA-MKD (Zhang et al., ICASSP 2022): w_k = (1 - softmax_k(CE_k)) / (K - 1),
  CE_k teacher k's cross-entropy on the label of each example, so teachers
  that are more confidently right weigh more. Needs K >= 2."""
  k = teacher_logits.shape[0]
  if k < 2:
    raise ValueError('confidence weighting needs at least 2 teachers')
  ce = classification.cross_entropy(
      teacher_logits, jnp.broadcast_to(labels, teacher_logits.shape[:2]))
  return (1.0 - jax.nn.softmax(ce, axis=0)) / (k - 1)


def entropy(teacher_logits):
  """w = softmax_k(-H_k), H_k the entropy of teacher k's prediction: the more
  certain a teacher is about an example, the more it counts there."""
  log_p = jax.nn.log_softmax(teacher_logits.astype(jnp.float32))
  h = -jnp.sum(jnp.exp(log_p) * log_p, -1)
  return jax.nn.softmax(-h, axis=0)


def kd_gradients(student_logits, teacher_logits, temperature: float):
  """[K, B, C]: d/ds of T^2 KL(softmax(t_k / T) || softmax(s / T)) per
  example, which is T (softmax(s / T) - softmax(t_k / T))."""
  q = divergences.tempered_softmax(student_logits, temperature)
  p = divergences.tempered_softmax(teacher_logits, temperature)
  return temperature * (q[None] - p)


def min_norm(gram, iterations: int = 64):
  """argmin over the simplex of w^T G w: the min-norm point of the convex
  hull of vectors with Gram matrix `gram` [K, K] (MGDA, Sener & Koltun 2018).

  K = 2 has the closed form w_1 = clip((G22 - G12) / (G11 + G22 - 2 G12),
  0, 1); larger K runs Frank-Wolfe with exact line search from the uniform
  point. Both are differentiation-free and fixed-size, so they jit.
  """
  gram = gram.astype(jnp.float32)
  k = gram.shape[0]
  if k == 1:
    return jnp.ones((1,))
  if k == 2:
    denom = gram[0, 0] + gram[1, 1] - 2 * gram[0, 1]
    a = jnp.where(denom > 0, (gram[1, 1] - gram[0, 1]) / jnp.maximum(denom, 1e-30),
                  0.5)
    a = jnp.clip(a, 0.0, 1.0)
    return jnp.stack([a, 1.0 - a])

  def step(w, _):
    gw = gram @ w
    t = jnp.argmin(gw)  # The vertex best aligned against the gradient.
    # Exact line search on w + gamma (e_t - w) for the quadratic.
    v = w @ gw          # w^T G w
    tv = gw[t]          # e_t^T G w
    tt = gram[t, t]
    denom = v - 2 * tv + tt
    gamma = jnp.where(denom > 0, jnp.clip((v - tv) / jnp.maximum(denom, 1e-30),
                                          0.0, 1.0), 0.0)
    return (1 - gamma) * w + gamma * jax.nn.one_hot(t, k), None

  w, _ = jax.lax.scan(step, jnp.full((k,), 1.0 / k), None, length=iterations)
  return w


def ae_kd(student_logits, teacher_logits, temperature: float, gram_sum=None):
  """AE-KD (Du et al., NeurIPS 2020): the teachers' KD gradients with respect
  to the student's logits, g_k over the whole batch, combined with the
  min-norm weights, so no teacher's direction dominates the others.

  `gram_sum` reduces the [K, K] Gram matrix across shards (e.g. a pmean), so
  every device solves the same problem as one device with the global batch.
  """
  g = kd_gradients(student_logits, teacher_logits, temperature)
  g = g.reshape(g.shape[0], -1)
  gram = g @ g.T / g.shape[1]
  if gram_sum is not None:
    gram = gram_sum(gram)
  w = min_norm(gram)
  return jnp.broadcast_to(w[:, None], teacher_logits.shape[:2])


def combine(weights, teacher_logits, temperature: float):
  """[B, C]: the mixture sum_k w_k softmax(t_k / T) (`kd.teachers`'s, which
  language-model runs use too)."""
  return teachers.mixture(weights, teacher_logits, temperature)


def kd_to_target(student_logits, target, temperature: float):
  """T^2 KL(target_i || softmax(s_i / T)) per example i; `target` is a
  distribution that receives no gradient."""
  target = jax.lax.stop_gradient(target)
  log_q = divergences.tempered_log_softmax(student_logits, temperature)
  # The mixture target is at hand as probabilities (0 log 0 = 0).
  return temperature**2 * optax.losses.kl_divergence(log_q, target)
