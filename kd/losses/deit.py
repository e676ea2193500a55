"""The two heads of DeiT (Touvron et al., "Training data-efficient image
transformers & distillation through attention", ICML 2021).

A distilled DeiT trains its class token's head on the labels and its
distillation token's head on the teacher: as two terms of a run with
`distill.ce_weight=0`, `label_cross_entropy` on the student's 'cls_logits'
and `hard_distillation` (or the soft `kd`) on its 'dist_logits', weighted
1/2 each.
"""
import jax.numpy as jnp

from kd.losses.classification import cross_entropy


def hard_distillation(student_logits, teacher_logits):
  """Hard-label distillation (DeiT, eq. 3): the teacher's decision
  y_t = argmax_c z_t is the target,

  L_i = -log softmax(z_s,i)_{y_t,i}, per example (averaged by the step).

  The paper's full objective 1/2 CE(z_cls, y) + 1/2 CE(z_dist, y_t) pairs
  this with `label_cross_entropy` on the class head. No gradient reaches the
  teacher (argmax has none).
  """
  return cross_entropy(student_logits, jnp.argmax(teacher_logits, -1))


def label_cross_entropy(student_logits, teacher_logits, labels,
                        label_smoothing: float = 0.0):
  """Cross-entropy with the labels as a distillation term, for a student
  output other than its logits (DeiT's class head 'cls_logits'):

  L_i = -sum_c q_ic log softmax(z_s,i)_c, q the (smoothed) one-hot label,
  per example (averaged by the step).

  The teacher's logits are ignored; they are an argument only because every
  term pairs a student and a teacher output.
  """
  del teacher_logits
  return cross_entropy(student_logits, labels, label_smoothing)
