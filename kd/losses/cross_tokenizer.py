"""Divergences between a student and a teacher of different vocabularies
(cross-tokenizer distillation), per position: student logits [..., Vs] and
teacher logits [..., Vt] at positions already paired (in a training step:
the positions where both tokenizations end at the same byte, `kd.data.align`)
-> values [...].

Notation as in `kd.losses.divergences`: p = softmax(t / T) the teacher's
distribution, q = softmax(s / T) the student's; no T^2 factor; the teacher's
logits receive no gradient.
"""
import jax.numpy as jnp

from kd.losses import divergences


def _descending(probs):
  return jnp.flip(jnp.sort(probs, -1), -1)


def sorted_l1(p, q):
  """sum_i |p_(i) - q_(i)| over the last axis, p_(i) and q_(i) the i-th
  largest entries, the shorter vector padded with zeros: the Wasserstein-1
  distance between the two sorted vectors (any lengths)."""
  p, q = _descending(p), _descending(q)
  width = max(p.shape[-1], q.shape[-1])
  pad = lambda x: jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, width - x.shape[-1])])
  return jnp.sum(jnp.abs(pad(p) - pad(q)), -1)


def uld(student_logits, teacher_logits, temperature: float = 1.0):
  """Universal Logit Distillation (Boizard et al., 2024, "Towards
  Cross-Tokenizer Distillation: the Universal Logit Distillation Loss for
  LLMs"): with p_(i), q_(i) the i-th largest probabilities of each side,
  the shorter vector padded with zeros to max(Vs, Vt) entries,

    L = sum_i |p_(i) - q_(i)|,

  the closed form of the Wasserstein-1 distance between the sorted
  probability vectors. It needs no mapping between the vocabularies: it
  matches the shape of the teacher's distribution (its confidence and how
  its mass spreads), not which token gets it. In [0, 2]; 0 when the sorted
  vectors agree. Vs and Vt may differ.
  """
  log_q, log_p = divergences.log_probs(student_logits, teacher_logits,
                                       temperature)
  return sorted_l1(jnp.exp(log_p), jnp.exp(log_q))
