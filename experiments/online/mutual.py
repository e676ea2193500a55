"""The deep mutual learning term (Zhang et al., CVPR 2018), a pure function."""
import jax
import jax.numpy as jnp

from kd.losses import divergences


def mutual_kl(logits, temperature: float = 1.0):
  """[N]: for each of N students, T^2 mean_b 1/(N-1) sum_{j != i}
  KL(p_j || p_i), p = softmax(logits / T), `logits` [N, B, C].

  The peers' distributions p_j are stop-gradient, so summing the N values
  and differentiating gives each student only its own term's gradient, the
  alternating update of the paper done at once.
  """
  n = logits.shape[0]
  if n < 2:
    raise ValueError('mutual learning needs at least 2 students')
  log_q = divergences.tempered_log_softmax(logits, temperature)
  log_p = jax.lax.stop_gradient(log_q)
  # kl[j, i, b] = KL(p_j || p_i) for every ordered pair; the diagonal is 0.
  kl = divergences.kl(log_p[:, None], log_q[None])
  return temperature**2 * jnp.mean(jnp.sum(kl, 0), -1) / (n - 1)
