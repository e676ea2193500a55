"""Top-1 hits and agreement of logits [..., C], for jax and numpy arrays
alike (inside a jitted step or on the host)."""


def hits(logits, labels):
  """argmax(logits) == labels, per example (bool)."""
  return logits.argmax(-1) == labels


def agreement(logits, other_logits):
  """argmax(logits) == argmax(other_logits), per example (bool): whether two
  models predict the same class."""
  return logits.argmax(-1) == other_logits.argmax(-1)
