"""Losses between student and teacher logits."""
import jax
import jax.numpy as jnp


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
