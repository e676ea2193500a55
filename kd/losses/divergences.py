"""Divergences between the teacher's and the student's softened predictions,
per position: logits [..., V] (a classifier's [B, C], a language model's
[B, T, V]) -> values [...].

Notation: p = softmax(t / T) the teacher's distribution, q = softmax(s / T)
the student's, T the temperature (both logits divided by it before the
softmax). No T^2 factor is applied (as in GKD and TRL); `kd.losses.logits.kd`
is the T^2-scaled forward KL of Hinton et al. The teacher's logits receive no
gradient.
"""
import functools
import inspect
import math
from numbers import Number

import jax
import jax.numpy as jnp
import optax


def kl(log_p, log_q):
  """KL(p || q) = sum_v p_v (log p_v - log q_v) over the last axis, from
  log-probabilities (`optax.losses.kl_divergence_with_log_targets`)."""
  return optax.losses.kl_divergence_with_log_targets(log_q, log_p)


def check_positive(name: str, value) -> None:
  """Raises ValueError if a concrete number `value` is not > 0."""
  if isinstance(value, Number) and not value > 0:
    raise ValueError(f'{name} must be > 0, got {value}')


def tempered(logits, temperature: float = 1.0):
  """z / T in float32: the logits every softened distribution starts from."""
  return logits.astype(jnp.float32) / temperature


def tempered_softmax(logits, temperature: float = 1.0):
  """softmax(z / T) over the last axis, in float32."""
  return jax.nn.softmax(tempered(logits, temperature))


def tempered_log_softmax(logits, temperature: float = 1.0):
  """log softmax(z / T) over the last axis, in float32."""
  return jax.nn.log_softmax(tempered(logits, temperature))


def log_probs(student_logits, teacher_logits, temperature: float = 1.0):
  """(log q, log p): float32 log-softmax of both logits over T; the teacher's
  side is stop-gradient."""
  check_positive('temperature', temperature)
  return (tempered_log_softmax(student_logits, temperature),
          tempered_log_softmax(jax.lax.stop_gradient(teacher_logits),
                               temperature))


def _log_mixture(log_a, log_b, weight: float):
  """log(w a + (1 - w) b), computed in log space."""
  return jnp.logaddexp(log_a + jnp.log(weight), log_b + jnp.log1p(-weight))


def of_log_probs(form):
  """The divergence `form(log_q, log_p, **kwargs)`, written on the tempered
  log-probabilities, as a loss of logits:
    fn(student_logits, teacher_logits, temperature=1.0, **kwargs)
      = form(*log_probs(student_logits, teacher_logits, temperature), **kwargs).
  `fn.on_log_probs` is `form`: a step that holds the log-probabilities
  already (one log-softmax per model and temperature, shared by every term
  and the cross-entropy, `kd.steps.LogProbs`) calls it directly."""

  def fn(student_logits, teacher_logits, temperature: float = 1.0, **kwargs):
    return form(*log_probs(student_logits, teacher_logits, temperature),
                **kwargs)

  functools.update_wrapper(fn, form)
  del fn.__wrapped__  # The signature is fn's own, with form's options.
  own = list(inspect.signature(fn).parameters.values())[:3]
  fn.__signature__ = inspect.signature(form).replace(parameters=[
      *own, *list(inspect.signature(form).parameters.values())[2:]])
  fn.on_log_probs = form
  return fn


@of_log_probs
def forward_kl(log_q, log_p):
  """KL(p || q), the teacher's distribution against the student's: mode
  covering (Hinton et al., 2015, without the T^2)."""
  return kl(log_p, log_q)


@of_log_probs
def reverse_kl(log_q, log_p):
  """KL(q || p) = sum_v q_v (log q_v - log p_v): mode seeking (MiniLLM,
  Gu et al., ICLR 2024; GKD with beta -> 1)."""
  return kl(log_q, log_p)


def _check_beta(beta):
  if isinstance(beta, Number) and not 0 < beta < 1:
    raise ValueError(f'beta must be in (0, 1), got {beta}; beta = 0 and 1 '
                     'are the forward_kl and reverse_kl losses')


@of_log_probs
def generalized_jsd(log_q, log_p, beta: float = 0.5):
  """Generalized Jensen-Shannon divergence (GKD, Agarwal et al., ICLR 2024):
  JSD_beta = beta KL(p || m) + (1 - beta) KL(q || m), m = beta p + (1 - beta) q,
  0 < beta < 1; beta = 0.5 is the Jensen-Shannon divergence.

  As beta -> 0, JSD_beta / beta -> KL(p || q) (forward); as beta -> 1,
  JSD_beta / (1 - beta) -> KL(q || p) (reverse). This is TRL's
  `generalized_jsd_loss` (its `beta` weights the teacher's term, M = beta
  teacher + (1 - beta) student), except that TRL takes beta = 0 and 1 to
  mean the plain forward and reverse KL (use `forward_kl` / `reverse_kl`),
  and that its `reduction='batchmean'` divides the sum over tokens by the
  number of sequences, where the scalar form here averages over tokens.
  """
  _check_beta(beta)
  log_m = _log_mixture(log_p, log_q, beta)
  return beta * kl(log_p, log_m) + (1 - beta) * kl(log_q, log_m)


@of_log_probs
def tvd(log_q, log_p):
  """Total variation distance 0.5 sum_v |p_v - q_v| (in [0, 1]; used as a
  GKD divergence by Wen et al., ACL 2023, f-divergence KD)."""
  return 0.5 * jnp.sum(jnp.abs(jnp.exp(log_p) - jnp.exp(log_q)), -1)


def _check_alpha(alpha):
  if isinstance(alpha, Number) and not 0 <= alpha <= 1:
    raise ValueError(f'alpha must be in [0, 1], got {alpha}')


@of_log_probs
def skew_kl(log_q, log_p, alpha: float = 0.1):
  """Skew KL (DistiLLM, Ko et al., ICML 2024):
  KL(p || alpha p + (1 - alpha) q), 0 <= alpha <= 1; alpha = 0 is the
  forward KL, and the skew keeps the value and gradient bounded where q is
  near 0."""
  _check_alpha(alpha)
  return kl(log_p, _log_mixture(log_p, log_q, alpha))


@of_log_probs
def skew_reverse_kl(log_q, log_p, alpha: float = 0.1):
  """Skew reverse KL (DistiLLM, Ko et al., ICML 2024):
  KL(q || alpha q + (1 - alpha) p), 0 <= alpha <= 1; alpha = 0 is the
  reverse KL."""
  _check_alpha(alpha)
  return kl(log_q, _log_mixture(log_q, log_p, alpha))


def topk_kl_cached(student_logits, teacher_topk, temperature: float = 1.0,
                   tail: bool = False):
  """Forward KL to the teacher's top-k, from cached `(values, indices)`, each
  [..., k]: the teacher's logits (or log-probabilities: the softmax over k is
  the same) at its k most likely tokens, and those tokens.

  The teacher's distribution is truncated to its top k and renormalised,
  p~ = softmax(values / T); the student's log-probabilities are those of its
  full softmax, gathered at the indices:
    L = sum_{j <= k} p~_j (log p~_j - log q_{i_j}),
  which is KL(p~ || q) with p~ zero off the top k, so it is >= 0 and 0 only
  when q = p~; it pulls the student's mass into the teacher's top k (the
  "top-k" sparse KD of cached-logit distillation, e.g. Anshumann et al.,
  2025). Renormalising the student over the k as well would ignore the mass
  it puts elsewhere.

  With `tail`, `teacher_topk` is `(log-probabilities, indices, log tail)`
  (a compressed cache's, `kd.topk_codec`: log t = log(1 - sum_j p_j)) and
  the rest of the vocabulary is one more bucket on both sides (`buckets`):
    L = sum_{j <= k} p_j (log p_j - log q_{i_j}) + p_t (log p_t - log q_t),
  the KL between the two (k + 1)-bucket distributions, so the student's
  mass outside the teacher's k is kept at the teacher's tail mass instead of
  pushed to 0.
  """
  if tail:
    log_q, log_p = buckets(student_logits, teacher_topk, temperature, True)
    return kl(log_p, log_q)
  values, indices = teacher_topk[:2]
  log_q, log_p = log_probs(student_logits, values, temperature)
  return kl(log_p, jnp.take_along_axis(log_q, indices, -1))


def topk_mixture_kl_cached(student_logits, teacher_topk, weights,
                           temperature: float = 1.0):
  """Forward KL to the weighted mixture of K teachers' cached top-k
  (several teachers' caches, `kd.teachers`): `teacher_topk = (values,
  indices)` [..., K k], teacher k's k entries at positions k k .. k k + k - 1
  (each as `topk_kl_cached` reads one cache), `weights` [K] summing to 1.
  Each teacher's distribution is truncated to its top k and renormalised,
  p~_k = softmax(values_k / T), and the target is their mixture
  p = sum_k w_k p~_k on the union of the K supports (a token in several
  teachers' top k gets each one's share):
    L = sum_i p_i (log p_i - log q_i),
  q the student's full softmax(s / T) at those tokens; KL(p || q) >= 0, 0
  only when q = p. With K = 1 it is `topk_kl_cached`. (The tails differ
  per teacher, so no tail bucket.)"""
  check_positive('temperature', temperature)
  values, indices = teacher_topk[:2]
  w = jnp.asarray(weights, jnp.float32)
  per = values.shape[-1] // w.shape[0]
  v = jax.lax.stop_gradient(values).reshape(
      *values.shape[:-1], w.shape[0], per)
  p = (tempered_softmax(v, temperature) * w[:, None]).reshape(values.shape)
  log_q = jnp.take_along_axis(jax.nn.log_softmax(
      tempered(student_logits, temperature)), indices, -1)
  # p_i at each entry's token: every entry of that token summed.
  same = indices[..., :, None] == indices[..., None, :]
  mass = jnp.sum(jnp.where(same, p[..., None, :], 0.0), -1)
  on = p > 0  # A zero weight's entries count nothing (0 log 0 = 0).
  log_mass = jnp.log(jnp.where(on, mass, 1.0))
  return jnp.sum(jnp.where(on, p * (log_mass - log_q), 0.0), -1)


def buckets(student_logits, teacher_topk, temperature: float = 1.0,
            tail: bool = False):
  """(log q, log p) [..., k] or [..., k + 1]: both distributions on the
  teacher's cached support, the k tokens `indices` of `teacher_topk =
  (values, indices[, log_tail])`.

  Without `tail` both are renormalised over the k: p = softmax(values / T),
  q = softmax(s_{i_j} / T). With `tail` the rest of the vocabulary is one
  more bucket: p = softmax([l_1..l_k, log t] / T) (at T = 1 the cached
  log-probabilities and tail themselves; at other T the buckets are
  tempered as k + 1 outcomes, the tail's tokens unknown), and q is the
  student's full softmax(s / T) at the k tokens with
  q_t = sum_{v not in the k} q_v (a log-sum-exp over the other tokens, not
  1 - sum, which cancels).
  """
  check_positive('temperature', temperature)
  values, indices = teacher_topk[:2]
  values = jax.lax.stop_gradient(values)
  z = tempered(student_logits, temperature)
  if not tail:
    return (jax.nn.log_softmax(jnp.take_along_axis(z, indices, -1)),
            tempered_log_softmax(values, temperature))
  if len(teacher_topk) < 3:
    raise ValueError('the tail bucket needs the teacher\'s tail mass: '
                     '(values, indices, log_tail), as a compressed top-k '
                     'cache stores it')
  log_tail = jax.lax.stop_gradient(teacher_topk[2])
  lse = jax.nn.logsumexp(z, -1, keepdims=True)
  rest = jnp.put_along_axis(z, indices, -jnp.inf, -1, inplace=False)
  # >= -1e4: a k that covers the vocabulary leaves the student no tail.
  q_tail = jnp.maximum(jax.nn.logsumexp(rest, -1, keepdims=True) - lse, -1e4)
  log_q = jnp.concatenate([jnp.take_along_axis(z, indices, -1) - lse, q_tail],
                          -1)
  log_p = tempered_log_softmax(
      jnp.concatenate([values, log_tail[..., None]], -1), temperature)
  return log_q, log_p


def topk_reverse_kl_cached(student_logits, teacher_topk,
                           temperature: float = 1.0, tail: bool = False):
  """Reverse KL on the cached support, KL(q || p) = sum_j q_j (log q_j -
  log p_j) over the k tokens (both renormalised there) or, with `tail`, the
  k + 1 buckets (`buckets`): mode seeking (MiniLLM) from a top-k cache."""
  log_q, log_p = buckets(student_logits, teacher_topk, temperature, tail)
  return kl(log_q, log_p)


def topk_jsd_cached(student_logits, teacher_topk, temperature: float = 1.0,
                    beta: float = 0.5, tail: bool = False):
  """Generalized JSD (`generalized_jsd`) on the cached support:
  beta KL(p || m) + (1 - beta) KL(q || m), m = beta p + (1 - beta) q, over
  the k tokens (both renormalised there) or, with `tail`, the k + 1
  buckets (`buckets`)."""
  if isinstance(beta, Number) and not 0 < beta < 1:
    raise ValueError(f'beta must be in (0, 1), got {beta}')
  log_q, log_p = buckets(student_logits, teacher_topk, temperature, tail)
  log_m = _log_mixture(log_p, log_q, beta)
  return beta * kl(log_p, log_m) + (1 - beta) * kl(log_q, log_m)


def topk_kl(student_logits, teacher_logits, temperature: float = 1.0,
            k: int = 64):
  """`topk_kl_cached` with the teacher's top k (k >= 1) taken from its full
  logits."""
  if not 1 <= k <= teacher_logits.shape[-1]:
    raise ValueError(f'k must be in [1, {teacher_logits.shape[-1]}] (the '
                     f'vocabulary size), got {k}')
  return topk_kl_cached(student_logits,
                        jax.lax.top_k(jax.lax.stop_gradient(teacher_logits), k),
                        temperature)


def chunked(fn, chunk_size: int):
  """Per-position loss `fn(student, teacher, **kwargs)` computed `chunk_size`
  positions at a time, so its [positions, V] intermediates (both softmaxes,
  their logs, and in the backward pass their gradients) exist for one chunk
  at a time, not for all B * T positions.

  The student's logits and the teacher's (or its cached top-k tuple) are
  split along their leading position axes (those of the student's logits
  but the last); further arguments reach every chunk whole. Each chunk runs
  under `jax.checkpoint`, so the backward pass recomputes a chunk's
  intermediates instead of storing them. The logits themselves are inputs
  and stay whole; where `chunk_size` does not divide the number of
  positions they are padded (one more copy), so pick a divisor. Values and
  gradients equal those of `fn`.
  """
  if chunk_size < 1:
    raise ValueError(f'chunk_size must be >= 1, got {chunk_size}')

  def per_position(student_logits, teacher, *args, **kwargs):
    lead = student_logits.shape[:-1]
    n = math.prod(lead)
    size = min(chunk_size, n)
    num_chunks = -(-n // size)

    def split(x):
      x = x.reshape(n, *x.shape[len(lead):])
      pad = num_chunks * size - n
      if pad:
        x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
      return x.reshape(num_chunks, size, *x.shape[1:])

    chunks = jax.tree.map(split, (student_logits, teacher))
    values = jax.lax.map(jax.checkpoint(lambda c: fn(*c, *args, **kwargs)),
                         chunks)
    return values.reshape(-1)[:n].reshape(lead)

  return per_position
