"""The two ablations of Born-Again Networks (Furlanello et al., ICML 2018),
registered with kd's loss and adapter tables on import so that pipeline
configs can name them ('cwtm' loss, 'dkpp' adapter)."""
import jax
import jax.numpy as jnp

from kd import adapters
from kd import losses


def cwtm(student_logits, teacher_logits, labels):
  """Confidence-weighted by teacher max: label cross-entropy of each example
  weighted by the teacher's top probability, normalised over the batch,
  L = sum_i (max_c p_ic / sum_j max_c p_jc) CE(s_i, y_i). The teacher
  decides only how much each example counts, not what it should say. A
  batch-level loss: the weights are normalised over the batch."""
  p_max = jnp.max(jax.nn.softmax(
      jax.lax.stop_gradient(teacher_logits).astype(jnp.float32)), -1)
  ce = losses.classification.cross_entropy(student_logits, labels)
  return jnp.sum(p_max / jnp.sum(p_max) * ce)


def permute_dark_knowledge(teacher_logits, rng):
  """Dark knowledge with permuted predictions: each example's non-argmax
  logits shuffled among the non-argmax classes (a fresh permutation per
  example); softmax commutes with permutations, so the probabilities are
  permuted alike and the argmax and its probability stay."""
  b, c = teacher_logits.shape
  top = jnp.argmax(teacher_logits, -1)
  keys = jax.random.split(rng, b)
  # Sorting random keys with the argmax's pinned to -inf keeps it first:
  # slot 0 is the argmax, the rest a uniform permutation of the others.
  r = jax.vmap(lambda k: jax.random.uniform(k, (c,)))(keys)
  r = jnp.where(jax.nn.one_hot(top, c) > 0, -jnp.inf, r)
  shuffled = jnp.argsort(r, -1)  # [b, c]: argmax, then the others shuffled.
  ordered = jnp.argsort(jnp.where(jax.nn.one_hot(top, c) > 0, -jnp.inf,
                                  jnp.arange(c, dtype=jnp.float32)), -1)
  # Class ordered[i, j] takes the logit of class shuffled[i, j].
  values = jnp.take_along_axis(teacher_logits, shuffled, -1)
  inverse = jnp.argsort(ordered, -1)
  return jnp.take_along_axis(values, inverse, -1)


def dkpp() -> adapters.Adapter:
  """Adapter for a logit loss: the teacher's logits through
  `permute_dark_knowledge`, the student's unchanged."""

  def init(rng, s, t, num_examples):
    del rng, s, t, num_examples
    return {}, {}

  def apply(params, state, s, t, batch, rng):
    del params, batch
    return (s, permute_dark_knowledge(jax.lax.stop_gradient(t), rng)), {}, state

  return adapters.Adapter(init, apply)


losses.register(cwtm, 'logits', labels=True, per_position=False)
adapters.register('dkpp', dkpp)
