"""Supervised losses."""
import jax
import jax.numpy as jnp


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
  """Batch-mean cross-entropy with integer labels.

  CE = -mean_i sum_c q_ic log softmax(z_i)_c, with q the one-hot label smoothed
  as q = (1 - eps) onehot + eps / C.
  """
  logits = logits.astype(jnp.float32)
  num_classes = logits.shape[-1]
  q = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    q = q * (1.0 - label_smoothing) + label_smoothing / num_classes
  return -jnp.mean(jnp.sum(q * jax.nn.log_softmax(logits), axis=-1))
