"""Supervised losses, per position."""
import jax
import jax.numpy as jnp


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
  """Cross-entropy with integer labels, per position: logits [..., C],
  labels [...] -> [...].

  CE = -sum_c q_c log softmax(z)_c, with q the one-hot label smoothed as
  q = (1 - eps) onehot + eps / C.
  """
  return cross_entropy_of_log_probs(
      jax.nn.log_softmax(logits.astype(jnp.float32)), labels, label_smoothing)


def cross_entropy_of_log_probs(log_probs, labels,
                               label_smoothing: float = 0.0):
  """`cross_entropy` from the log-probabilities log softmax(z) [..., C] (a
  step that holds them already, `kd.steps.LogProbs`): -sum_c q_c log_probs_c."""
  num_classes = log_probs.shape[-1]
  q = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    q = q * (1.0 - label_smoothing) + label_smoothing / num_classes
  return -jnp.sum(q * log_probs, -1)
