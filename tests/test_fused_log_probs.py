"""One log-softmax per model and temperature in a distillation step
(`kd.steps.LogProbs`): the cross-entropy and every divergence term read
the same log-probabilities, with the values and gradients of each loss
computing its own."""
import inspect

import jax
import jax.numpy as jnp
import numpy as np

from kd import losses, steps

R = np.random.default_rng(0)
B, T, V = 2, 6, 7
S = jnp.asarray(R.normal(size=(B, T, V)) * 2, jnp.float32)
TE = jnp.asarray(R.normal(size=(B, T, V)) * 2, jnp.float32)
BATCH = {'label': jnp.asarray(R.integers(0, V, size=(B, T))),
         'mask': jnp.asarray([[1, 1, 1, 1, 0, 0], [1] * 6], jnp.float32)}
TERMS = (
    steps.Term('fkl', 'forward_kl', 0.5),
    steps.Term('rkl2', 'reverse_kl', 0.3, kwargs={'temperature': 2.0}),
    steps.Term('jsd2', 'generalized_jsd', 0.2,
               kwargs={'temperature': 2.0, 'beta': 0.3}),
    steps.Term('tvd', 'tvd', 0.1),
    # Chunked: the student's T = 1 log-probabilities are the CE's; at T = 2
    # none are held, and the chunk computes both.
    steps.Term('fkl_chunked', 'forward_kl', 0.4, kwargs={'chunk_size': 4}),
    steps.Term('skew_chunked', 'skew_kl', 0.2,
               kwargs={'chunk_size': 5, 'temperature': 2.0, 'alpha': 0.2}),
    steps.Term('scheduled', 'skew_reverse_kl', 0.3, kwargs={
        'alpha': 0.1, 'schedule': {'temperature': ('linear', 1.0, 3.0)}},
               num_steps=4),
    steps.Term('scheduled_chunked', 'forward_kl', 0.1, kwargs={
        'chunk_size': 4, 'schedule': {'temperature': ('linear', 1.0, 2.0)}},
               num_steps=4),
    steps.Term('topk', 'topk_kl', 0.2, kwargs={'k': 3}),
)


def loss(s, t, fused: bool, step=1):
  s_out, t_out = {'logits': s}, {'logits': t}
  log_probs = steps.LogProbs(s_out, t_out) if fused else None
  ce = steps.label_loss(s, BATCH, 0.1,
                        log_probs('student') if fused else None)
  distill, metrics, _ = steps.apply_terms(TERMS, s_out, t_out, BATCH, step,
                                          log_probs=log_probs)
  return ce + distill, metrics


def softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_values_and_gradients_equal_the_losses_computed_apart():
  (fused, m_fused), g_fused = jax.value_and_grad(
      loss, has_aux=True)(S, TE, True)
  (apart, m_apart), g_apart = jax.value_and_grad(
      loss, has_aux=True)(S, TE, False)
  np.testing.assert_allclose(float(fused), float(apart), rtol=1e-6)
  for name in m_apart:
    np.testing.assert_allclose(float(m_fused[name]), float(m_apart[name]),
                               rtol=1e-6, atol=1e-7, err_msg=name)
  np.testing.assert_allclose(g_fused, g_apart, rtol=1e-5, atol=1e-7)
  # And the forward KL term against NumPy, over the unmasked tokens.
  p, q = softmax(np.asarray(TE)), softmax(np.asarray(S))
  kl = np.sum(p * (np.log(p) - np.log(q)), -1)
  mask = np.asarray(BATCH['mask'])
  np.testing.assert_allclose(float(m_fused['fkl']),
                             np.sum(mask * kl) / mask.sum(), rtol=1e-5)
  np.testing.assert_allclose(float(m_fused['fkl_chunked']),
                             np.sum(mask * kl) / mask.sum(), rtol=1e-5)


def _count(jaxpr, primitive: str) -> int:
  """Equations of `primitive` in `jaxpr` and the jaxprs inside it."""
  n = 0
  for eqn in jaxpr.eqns:
    n += eqn.primitive.name == primitive
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        sub = getattr(sub, 'jaxpr', sub)  # A closed jaxpr's own.
        if hasattr(sub, 'eqns'):
          n += _count(sub, primitive)
  return n


def test_one_log_softmax_per_model_and_temperature():
  """Each log-softmax takes one max over the vocabulary. Apart: the CE's
  and two per divergence. Fused: (student, teacher) x (T = 1, T = 2), the
  chunked T = 2 term's two in its chunk, the scheduled term's two (its
  temperature is traced), the top-k term's own over the student's
  logits (it is not a divergence of the full distributions), and the
  top-k itself; each term with a scheduled temperature (traced) its own
  two."""
  apart = _count(jax.make_jaxpr(lambda s, t: loss(s, t, False))(S, TE).jaxpr,
                 'reduce_max')
  fused = _count(jax.make_jaxpr(lambda s, t: loss(s, t, True))(S, TE).jaxpr,
                 'reduce_max')
  top_k = 2  # topk_kl: the student's log-softmax and the teacher's top k's.
  assert apart == 1 + 2 * 8 + top_k
  assert fused == 4 + 2 + 2 * 2 + top_k


def test_a_divergence_is_its_form_on_the_tempered_log_probabilities():
  fn = losses.divergences.generalized_jsd
  assert list(inspect.signature(fn).parameters) == [
      'student_logits', 'teacher_logits', 'temperature', 'beta']
  log_q = losses.divergences.tempered_log_softmax(S, 2.0)
  log_p = losses.divergences.tempered_log_softmax(TE, 2.0)
  np.testing.assert_allclose(fn(S, TE, 2.0, beta=0.3),
                             fn.on_log_probs(log_q, log_p, beta=0.3),
                             rtol=1e-6)
