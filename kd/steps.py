"""Pure per-shard step functions.

Each step sees one data shard and averages across shards with named-axis
collectives over `AXIS`, so the same function runs under `jax.pmap` and under
`jax.shard_map` (see `kd.parallel`). No I/O happens here.
"""
import dataclasses
import inspect
from typing import Any, Callable, Mapping

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from kd import losses

AXIS = 'batch'


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  model_state: Any  # Non-trainable collections, e.g. batch_stats.
  opt_state: Any


def create_state(model: nn.Module, tx: optax.GradientTransformation, rng,
                 example_input) -> TrainState:
  variables = dict(model.init(rng, example_input, train=False))
  params = variables.pop('params')
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    model_state=dict(variables),
                    opt_state=tx.init(params))


@dataclasses.dataclass(frozen=True)
class Term:
  """One weighted distillation loss pairing a student and a teacher output.

  `student` and `teacher` name entries of the models' outputs: `'logits'` or
  a key of their feature dicts.
  """
  name: str
  loss: str
  weight: float
  student: str = 'logits'
  teacher: str = 'logits'
  kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __call__(self, student_out, teacher_out, labels):
    fn = losses.get(self.loss)
    extra = dict(self.kwargs)
    if 'labels' in inspect.signature(fn).parameters:
      extra['labels'] = labels
    return fn(student_out[self.student], teacher_out[self.teacher], **extra)


def _outputs(logits, features):
  return {'logits': logits, **features}


def _apply_train(model, params, model_state, x):
  """Forward pass in training mode; returns logits, features, new state."""
  variables = {'params': params, **model_state}
  if model_state:
    (logits, feats), new_state = model.apply(
        variables, x, train=True, mutable=list(model_state))
    new_state = jax.lax.pmean(dict(new_state), AXIS)
  else:
    logits, feats = model.apply(variables, x, train=True)
    new_state = model_state
  return logits, feats, new_state


def _update(state, tx, grads, new_model_state):
  grads = jax.lax.pmean(grads, AXIS)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  return state.replace(step=state.step + 1, params=params,
                       model_state=new_model_state, opt_state=opt_state)


def _accuracy(logits, labels):
  return jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))


def make_supervised_step(model: nn.Module, tx: optax.GradientTransformation,
                         label_smoothing: float = 0.0) -> Callable:
  """Cross-entropy training from labels: `step(state, batch)`."""

  def loss_fn(params, state, batch):
    logits, _, new_state = _apply_train(model, params, state.model_state,
                                        batch['image'])
    ce = losses.cross_entropy(logits, batch['label'], label_smoothing)
    return ce, (new_state, {'loss': ce, 'ce': ce,
                            'accuracy': _accuracy(logits, batch['label'])})

  def step(state, batch):
    grads, (new_state, metrics) = jax.grad(loss_fn, has_aux=True)(
        state.params, state, batch)
    return _update(state, tx, grads, new_state), jax.lax.pmean(metrics, AXIS)

  return step


def make_distill_step(student: nn.Module, teacher: nn.Module,
                      tx: optax.GradientTransformation, terms: tuple[Term, ...],
                      ce_weight: float, label_smoothing: float = 0.0
                      ) -> Callable:
  """Distillation from a frozen teacher: `step(state, teacher_vars, batch)`.

  loss = ce_weight * CE(student, labels) + sum_k weight_k * term_k.
  The teacher runs in inference mode and receives no gradient.
  """

  def loss_fn(params, state, teacher_out, batch):
    logits, feats, new_state = _apply_train(student, params,
                                            state.model_state, batch['image'])
    student_out = _outputs(logits, feats)
    ce = losses.cross_entropy(logits, batch['label'], label_smoothing)
    metrics = {'ce': ce, 'accuracy': _accuracy(logits, batch['label'])}
    total = ce_weight * ce
    for term in terms:
      value = term(student_out, teacher_out, batch['label'])
      metrics[term.name] = value
      total = total + term.weight * value
    metrics['loss'] = total
    return total, (new_state, metrics)

  def step(state, teacher_vars, batch):
    teacher_out = jax.lax.stop_gradient(
        _outputs(*teacher.apply(teacher_vars, batch['image'], train=False)))
    grads, (new_state, metrics) = jax.grad(loss_fn, has_aux=True)(
        state.params, state, teacher_out, batch)
    return _update(state, tx, grads, new_state), jax.lax.pmean(metrics, AXIS)

  return step


def make_eval_step(model: nn.Module, teacher: nn.Module | None = None
                   ) -> Callable:
  """Summed test statistics of a masked batch: `step(vars[, teacher_vars], batch)`.

  Returns sums over the global batch (psum): `count`, `correct`, and with a
  teacher `agree` (top-1 agreement) and `kl` (KL(teacher || student), T=1).
  """

  def stats(variables, batch, teacher_vars=None):
    logits, _ = model.apply(variables, batch['image'], train=False)
    mask = batch['mask']
    out = {'count': jnp.sum(mask),
           'correct': jnp.sum(mask * (jnp.argmax(logits, -1) == batch['label'])),
           'loss': jnp.sum(mask * optax.softmax_cross_entropy_with_integer_labels(
               logits, batch['label']))}
    if teacher is not None:
      t_logits, _ = teacher.apply(teacher_vars, batch['image'], train=False)
      log_p = jax.nn.log_softmax(t_logits)
      kl = jnp.sum(jnp.exp(log_p) * (log_p - jax.nn.log_softmax(logits)), -1)
      out['agree'] = jnp.sum(
          mask * (jnp.argmax(logits, -1) == jnp.argmax(t_logits, -1)))
      out['kl'] = jnp.sum(mask * kl)
    return jax.lax.psum(out, AXIS)

  if teacher is None:
    return stats
  return lambda variables, teacher_vars, batch: stats(variables, batch,
                                                      teacher_vars)
