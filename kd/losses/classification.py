"""Supervised losses, per position."""
import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
  """Cross-entropy with integer labels, per position: logits [..., C],
  labels [...] -> [...].

  CE = -sum_c q_c log softmax(z)_c, with q the one-hot label smoothed as
  q = (1 - eps) onehot + eps / C.
  """
  logits = logits.astype(jnp.float32)
  num_classes = logits.shape[-1]
  q = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    q = q * (1.0 - label_smoothing) + label_smoothing / num_classes
  return optax.softmax_cross_entropy(logits, q)
