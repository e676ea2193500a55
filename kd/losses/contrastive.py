"""Contrastive distillation objectives."""
import jax.numpy as jnp


def _nce(scores, num_examples: int, eps: float = 1e-7):
  """NCE with a uniform noise distribution Pn = 1 / N over the dataset:
  -mean_i [log(P_i0 / (P_i0 + K Pn)) + sum_k log(K Pn / (P_ik + K Pn))]."""
  k = scores.shape[1] - 1
  noise = k / num_examples
  log_d1 = jnp.log(scores[:, 0] / (scores[:, 0] + noise + eps))
  log_d0 = jnp.log(noise / (scores[:, 1:] + noise + eps))
  return -(jnp.sum(log_d1) + jnp.sum(log_d0)) / scores.shape[0]


def crd(student_scores, teacher_scores, num_examples: int):
  """Contrastive representation distillation (Tian et al., ICLR 2020).

  Inputs are normalised scores exp(v . m / T) / Z, [batch, 1 + K], positive
  first: student embeddings against the teacher-side memory bank and teacher
  embeddings against the student-side bank (see `kd.adapters.crd`). Both
  sides carry gradients into their (trainable) embedding heads.
  L = NCE(student_scores) + NCE(teacher_scores).
  """
  return (_nce(student_scores.astype(jnp.float32), num_examples) +
          _nce(teacher_scores.astype(jnp.float32), num_examples))
