"""Divergences between a student and a teacher of different vocabularies
(cross-tokenizer distillation), per position: student logits [..., Vs] and
teacher logits [..., Vt] at positions already paired (in a training step:
the positions where both tokenizations end at the same byte, `kd.data.align`)
-> values [...].

Notation as in `kd.losses.divergences`: p = softmax(t / T) the teacher's
distribution, q = softmax(s / T) the student's; no T^2 factor; the teacher's
logits receive no gradient.
"""
import jax
import jax.numpy as jnp
import numpy as np

from kd.losses import divergences


def sorted_l1(p, q):
  """sum_i |p_(i) - q_(i)| over the last axis, p_(i) and q_(i) the i-th
  largest entries, the shorter vector padded with zeros: the Wasserstein-1
  distance between the two sorted vectors (any lengths).

  Past the shorter length m the padded side is zero, so those terms sum to
  the longer side's mass outside its m largest entries: only the top m of
  each side are needed (`lax.top_k`, ~10x faster on CPU than a full sort
  of a 4,096-token teacher's probabilities, forward and backward)."""
  m = min(p.shape[-1], q.shape[-1])
  if m == 0:  # One side is empty: all the other's mass is unmatched.
    return jnp.sum(p, -1) + jnp.sum(q, -1)
  p_top, q_top = (jax.lax.top_k(x, m)[0] for x in (p, q))
  rest = sum(jnp.sum(x, -1) - jnp.sum(top, -1)
             for x, top in ((p, p_top), (q, q_top)) if x.shape[-1] > m)
  return jnp.sum(jnp.abs(p_top - q_top), -1) + rest


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


def span_log_probs(logits, targets, start, end, temperature: float = 1.0):
  """log P(span) = sum_{i = start}^{end - 1} log softmax(z_i / T)[y_i]: a
  model's log-probability of the tokens `targets` [B, L] at positions
  start..end - 1 (teacher forcing), for `start`, `end` [B, P] (start <= end
  <= L) from logits [B, L, V]; [B, P] float32."""
  log_probs = jax.nn.log_softmax(divergences.tempered(logits, temperature))
  picked = jnp.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
  total = jnp.pad(jnp.cumsum(picked, axis=-1), [(0, 0), (1, 0)])
  at = lambda i: jnp.take_along_axis(total, i, -1)
  return at(end) - at(start)


def _log1mexp(x):
  """log(1 - e^x) for x < 0, stable at both ends (Maechler 2012)."""
  x = jnp.minimum(x, -1e-6)  # A certain event: finite, not -inf.
  return jnp.where(x > -0.693, jnp.log(-jnp.expm1(x)),
                   jnp.log1p(-jnp.exp(x)))


def bernoulli_kl(log_p, log_q):
  """KL(Bern(P) || Bern(Q)) = P log(P / Q) + (1 - P) log((1 - P) / (1 - Q))
  from log P and log Q."""
  p = jnp.exp(log_p)
  return p * (log_p - log_q) + (1 - p) * (_log1mexp(log_p) - _log1mexp(log_q))


def hybrid_kl(student_logits, teacher_logits, matched_student,
              matched_teacher, spans=None, temperature: float = 1.0):
  """The aligned hybrid of GOLD (Patiño et al. 2025, "Unlocking On-Policy
  Distillation for Any Model Family", TRL's GOLD trainer) with ULD
  (Boizard et al. 2024), at positions where both tokenizations end at the
  same byte. `matched_student[k]` and `matched_teacher[k]` (static id
  arrays, `kd.data.align.vocab_map`) spell the same bytes (or play the
  same special role); M the matched pairs, U_t and U_s each side's other
  ids, p(M) and q(M) each side's mass on M:

    L = p(M) KL(p_M / p(M) || q_M / q(M))    exact matching, within M
      + sum_i |p_(i) - q_(i)| over U_t, U_s  ULD on the unmatched mass
      + KL(Bern(P) || Bern(Q))               the aligned span, if given

  with `spans = (log Q, log P, whole)` [...]: the student's and the
  teacher's log-probability of the text up to the next aligned position
  (`span_log_probs`: teacher forcing, the sum of each side's token
  log-probs over the span), counted where `whole` is 1.

  Within M the two sides' distributions are compared given M, weighted by
  the teacher's mass there: how much of its mass the student puts on M is
  left to ULD and the span term. (A KL with one bucket for the rest of
  each side, or over the unnormalised p_M, would push a byte-level
  student, whose tokens are all matched but the never-seen specials, to
  put the teacher's mass on multi-byte tokens onto those specials.) For a
  byte-level student U_s holds no token: the ULD term is then the
  teacher's unmatched mass, a constant, and the span term is what reaches
  the multi-byte teacher tokens. The matching treats a one-byte teacher
  token ("t") as the student's byte "t", although that byte also begins
  "the", as GOLD does; the span term makes no such approximation. With
  every token matched (one vocabulary) L is the forward KL.
  """
  log_q, log_p = divergences.log_probs(student_logits, teacher_logits,
                                       temperature)
  ms, mt = np.asarray(matched_student), np.asarray(matched_teacher)
  us = np.setdiff1d(np.arange(log_q.shape[-1]), ms)
  ut = np.setdiff1d(np.arange(log_p.shape[-1]), mt)
  given = lambda lx: lx - jax.nn.logsumexp(lx, -1, keepdims=True)
  lp, lq = log_p[..., mt], log_q[..., ms]
  loss = (jnp.exp(jax.nn.logsumexp(lp, -1)) * divergences.kl(given(lp),
                                                             given(lq))
          + sorted_l1(jnp.exp(log_p[..., ut]), jnp.exp(log_q[..., us])))
  if spans is not None:
    log_q_span, log_p_span, whole = spans
    loss = loss + whole * bernoulli_kl(jax.lax.stop_gradient(log_p_span),
                                       log_q_span)
  return loss
