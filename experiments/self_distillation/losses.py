"""The losses of self-distillation, pure functions of one model's outputs."""
import jax
import jax.numpy as jnp

from kd import losses


def byot(aux_logits, aux_features, final_logits, final_features, labels,
         alpha: float = 0.3, temperature: float = 3.0,
         feature_weight: float = 0.01):
  """Be Your Own Teacher (Zhang et al., ICCV 2019), summed over the shallow
  classifiers i, with the deepest one (logits q_C, features F_C) as teacher:
    (1 - alpha) CE(q_i, y) + alpha T^2 KL(q_C^T || q_i^T)
      + feature_weight * mean (F_i - F_C)^2.
  The teacher side is stop-gradient: the final classifier learns from the
  labels alone (its CE is added by the caller)."""
  teacher = jax.lax.stop_gradient(final_logits)
  hint_target = jax.lax.stop_gradient(final_features)
  total = 0.0
  for logits, feats in zip(aux_logits, aux_features):
    total += ((1 - alpha) * losses.cross_entropy(logits, labels)
              + alpha * losses.kd(logits, teacher, temperature)
              + feature_weight * losses.hint(feats, hint_target))
  return total


def virtual_teacher(num_classes: int, labels, correct_prob: float = 0.9):
  """[B, C]: Yuan et al.'s (CVPR 2020) hand-designed teacher, `correct_prob`
  on the label and (1 - correct_prob) / (C - 1) on every other class."""
  other = (1 - correct_prob) / (num_classes - 1)
  return jnp.where(jax.nn.one_hot(labels, num_classes) > 0, correct_prob,
                   other)


def teacher_free(logits, labels, alpha: float = 0.5, temperature: float = 20.0,
                 correct_prob: float = 0.9):
  """Tf-KD_reg (Yuan et al., CVPR 2020):
    (1 - alpha) CE(s, y) + alpha T^2 KL(softmax(p^d / T) || softmax(s / T)),
  p^d the `virtual_teacher` treated as logits, as in the authors' code.
  No teacher network is trained or run."""
  p_d = virtual_teacher(logits.shape[-1], labels, correct_prob)
  return ((1 - alpha) * losses.cross_entropy(logits, labels)
          + alpha * losses.kd(logits, p_d, temperature))
