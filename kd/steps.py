"""Pure per-shard step functions.

Each step sees one data shard and averages across shards with named-axis
collectives over `AXIS`, so the same function runs under `jax.pmap` and under
`jax.shard_map` (see `kd.parallel`). No I/O happens here.
"""
import dataclasses
import functools
import inspect
from numbers import Number
import re
from typing import Any, Callable, Mapping

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from kd import adapters as adapters_lib
from kd import losses
from kd import metrics
from kd import names
from kd import quantization
from kd import teachers as teachers_lib
from kd.parallel import AXIS


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any  # The student's.
  model_state: Any  # The student's non-trainable collections (batch_stats).
  opt_state: Any  # Over (params, aux_params).
  aux_params: Any = flax.struct.field(default_factory=dict)  # Per term.
  aux_state: Any = flax.struct.field(default_factory=dict)  # Per term.


def create_state(model: nn.Module, tx: optax.GradientTransformation, rng,
                 example_input, aux_params=None, aux_state=None) -> TrainState:
  def fresh(rng, example_input, aux_params):
    variables = dict(model.init(rng, example_input, train=False))
    params = variables.pop('params')
    return params, variables, tx.init((params, aux_params))

  # One program: run eagerly, every initializer and optimizer slot compiles
  # a program of its own (hundreds for a transformer).
  aux_params = aux_params or {}
  params, model_state, opt_state = jax.jit(fresh)(rng, example_input,
                                                  aux_params)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    model_state=model_state, opt_state=opt_state,
                    aux_params=aux_params, aux_state=aux_state or {})


def resolve(outputs_: Mapping[str, Any], key: str) -> str:
  """A feature name; '<prefix>stage-k' counts stages from the last
  ('stage-1' is a model's last stage, 'preact_stage-2' the pre-activation of
  the one before), so one config fits models of different depths. A model
  with no `preact_stage` taps has stage outputs without a final ReLU (WRN's
  pre-activation blocks, MobileNetV2's linear bottlenecks): there
  'preact_stage-k' means 'stage-k'."""
  match = re.fullmatch(r'(\w*stage)-(\d+)', key)
  if not match:
    return key
  prefix, k = match.group(1), int(match.group(2))
  stages = sorted((name for name in outputs_
                   if re.fullmatch(prefix + r'\d+', name)),
                  key=lambda name: int(name[len(prefix):]))
  if not stages and prefix == 'preact_stage':
    return resolve(outputs_, f'stage-{k}')
  return stages[-k] if 1 <= k <= len(stages) else key


def feature_names(outputs_: Mapping[str, Any], key: str) -> tuple[str, ...]:
  """The output names a term's `student` or `teacher` field selects, each
  `resolve`d: one name, or several comma-separated ('stage-2,stage-1')."""
  return tuple(resolve(outputs_, k.strip()) for k in key.split(','))


def select(outputs_: Mapping[str, Any], key: str):
  """The output `key` names, or the tuple of outputs for several names."""
  names = feature_names(outputs_, key)
  if len(names) == 1:
    return outputs_[names[0]]
  return tuple(outputs_[name] for name in names)


SCHEDULES = names.TERM_SCHEDULES


def scheduled(spec, step, num_steps: int):
  """The value at `step` of a schedule `spec` over `num_steps` steps:
  ('constant', v) -> v; ('linear', a, b) -> a + (b - a) f;
  ('cosine', a, b) -> b + (a - b) (1 + cos(pi f)) / 2; with
  f = min(step / n, 1), n the spec's optional fourth entry or `num_steps`,
  so the value is a at step 0 and b from step n on."""
  kind, *values = spec
  if kind == 'constant':
    return values[0]
  start, end, *n = values
  frac = jnp.minimum(step / max(n[0] if n else num_steps, 1), 1.0)
  if kind == 'linear':
    return start + (end - start) * frac
  if kind == 'cosine':
    return end + (start - end) * 0.5 * (1 + jnp.cos(jnp.pi * frac))
  raise ValueError(f'unknown schedule {kind!r}; valid: {", ".join(SCHEDULES)}')


@dataclasses.dataclass(frozen=True)
class Term:
  """One weighted distillation loss pairing a student and a teacher output.

  `student` and `teacher` name entries of the models' outputs: `'logits'` or
  a key of their feature dicts; several comma-separated names pass a tuple
  of outputs (FSP's layer pairs, review KD's stages). An `adapter` (see
  `kd.adapters`) maps the pair to the loss's inputs with learnable
  parameters of its own.
  Per-position losses are averaged over the batch's `mask` (all positions
  without one), or over the batch mask that `kwargs['average_over']` names
  ('attention_mask': every real token of a masked-LM batch, where `mask`
  holds the masked positions only: DistilBERT's cosine term); `kwargs['chunk_size']` computes such a loss that many
  positions at a time (`kd.losses.chunked`); `kwargs['warmup_steps']` ramps
  the weight up linearly over that many steps, and `kwargs['schedule']`
  maps 'weight' or a loss argument ('temperature', 'beta', ...) to a
  schedule (`scheduled`) over the run's `num_steps` (`at`).
  """
  name: str
  loss: str
  weight: float
  student: str = 'logits'
  teacher: str = 'logits'
  kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  adapter: str = ''
  adapter_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  num_steps: int = 0  # The run's, the default length of a schedule.

  @property
  def is_scheduled(self) -> bool:
    return bool(self.kwargs.get('warmup_steps') or self.kwargs.get('schedule'))

  def at(self, field: str, step, default):
    """Field `field` ('weight' or a loss argument) at training step `step`:
    its schedule's value, else `default`."""
    spec = (self.kwargs.get('schedule') or {}).get(field)
    return default if spec is None else scheduled(spec, step, self.num_steps)

  def weight_at(self, step):
    """The weight at training step `step` (from 0): the scheduled (or
    constant) weight, with warm-up times min((step + 1) / warmup_steps, 1),
    the per-epoch ramp of DKD's and review KD's reference code taken per
    step."""
    weight = self.at('weight', step, self.weight)
    warmup = self.kwargs.get('warmup_steps', 0)
    if not warmup:
      return weight
    return weight * jnp.minimum((step + 1) / warmup, 1.0)

  def make_adapter(self) -> adapters_lib.Adapter | None:
    return (adapters_lib.get(self.adapter, **self.adapter_kwargs)
            if self.adapter else None)

  def __call__(self, student_out, teacher_out, batch, aux_params=None,
               aux_state=None, rng=None, step=0, log_probs=None):
    """Returns (loss value, the adapter's new state); scheduled loss
    arguments take their values at `step`. With the step's `LogProbs`, a
    divergence of log-probabilities (`losses.divergences.of_log_probs`)
    reads them there instead of computing its own."""
    spec = losses.spec(self.loss)
    s = select(student_out, self.student)
    t = select(teacher_out, self.teacher)
    extra = dict(self.kwargs)
    extra.pop('warmup_steps', None)
    over = extra.pop('average_over', 'mask')
    if over != 'mask' and over not in batch:
      raise ValueError(f'distill term {self.name!r}: average_over={over!r} '
                       f'is not a mask of this batch ({", ".join(sorted(batch))})')
    mask = batch.get(over)
    for field in extra.pop('schedule', None) or {}:
      if field != 'weight':
        extra[field] = self.at(field, step, None)
    new_state = aux_state
    adapter = self.make_adapter()
    if adapter is not None:
      (s, t), more, new_state = adapter.apply(aux_params, aux_state, s, t,
                                              batch, rng)
      extra.update(more)
    if spec.labels:
      extra['labels'] = batch['label']
    if not spec.per_position:
      return spec.fn(s, t, **extra), new_state
    if spec.inputs == 'aligned':
      t, mask = aligned_pair(spec.fn, s, t, batch, extra, self.name)
    chunk_size = extra.pop('chunk_size', 0)
    form = getattr(spec.fn, 'on_log_probs', None)
    temperature = extra.get('temperature', 1.0)
    if (log_probs is not None and form is not None and adapter is None and (
        not chunk_size or log_probs.holds('student', self.student,
                                          temperature))):
      return losses.masked_mean(self.on_log_probs(
          form, log_probs, t, chunk_size, extra), mask), new_state
    fn = losses.chunked(spec.fn, chunk_size) if chunk_size else spec.fn
    return losses.masked_mean(fn(s, t, **extra), mask), new_state

  def on_log_probs(self, form, log_probs, teacher_logits, chunk_size: int,
                   extra: dict):
    """The divergence `form(log_q, log_p, **extra)` per position from the
    step's `log_probs` (`LogProbs`); chunked, the student's that the step
    holds already (the cross-entropy's at T = 1: `__call__` computes both
    sides a chunk at a time where it holds none) and the teacher's a chunk
    at a time."""
    extra = dict(extra)
    temperature = extra.pop('temperature', 1.0)
    losses.divergences.check_positive('temperature', temperature)
    log_q = log_probs('student', self.student, temperature)
    if not chunk_size:
      return form(log_q, log_probs('teacher', self.teacher, temperature),
                  **extra)
    return losses.chunked(lambda lq, t: form(
        lq, losses.divergences.tempered_log_softmax(
            jax.lax.stop_gradient(t), temperature), **extra),
                          chunk_size)(log_q, teacher_logits)


def aligned_pair(fn, student_logits, teacher_logits, batch, extra: dict,
                 name: str):
  """A cross-tokenizer term's inputs (batches of `kd.data.paired`): the
  teacher's logits at each student position's aligned teacher position
  [B, T, V'] and the mask of the aligned positions. A loss `fn` taking
  `spans` gets in `extra` each side's log-probability of the text up to
  the next aligned position, at the term's temperature, and where that
  span is whole (`kd.losses.cross_tokenizer.span_log_probs`)."""
  if 'align' not in batch:
    raise ValueError(f'distill term {name!r} compares two tokenizations: '
                     "its batches need both and their alignment ('align', "
                     'kd.data.paired)')
  a = batch['align']
  if 'spans' in inspect.signature(fn).parameters:
    if extra.get('chunk_size'):
      raise ValueError(f'distill term {name!r}: chunk_size does not split '
                       'the spans; remove it')
    temperature = extra.get('temperature', 1.0)
    positions = jnp.broadcast_to(jnp.arange(student_logits.shape[1]),
                                 a['student_next'].shape)
    extra['spans'] = (
        losses.cross_tokenizer.span_log_probs(
            student_logits, batch['label'], positions, a['student_next'],
            temperature),
        losses.cross_tokenizer.span_log_probs(
            teacher_logits, batch['teacher_label'], a['teacher_pos'],
            a['teacher_next'], temperature),
        a['span'])
  return (jnp.take_along_axis(teacher_logits, a['teacher_pos'][..., None],
                              1), a['aligned'])


def check_terms(terms, student_shapes, teacher_shapes) -> None:
  """Fails before training on unknown losses, adapters, or outputs the
  losses cannot pair; `*_shapes` are the models' `outputs` (shapes or
  arrays)."""
  for term in terms:
    losses.spec(term.loss)
    term.make_adapter()
    for side, key, shapes in (('student', term.student, student_shapes),
                              ('teacher', term.teacher, teacher_shapes)):
      if any(n not in shapes for n in feature_names(shapes, key)):
        raise ValueError(
            f'distill term {term.name!r} ({term.loss}) asks for {side} '
            f'output {key!r}; the {side} has: {", ".join(sorted(shapes))}')
    if not term.adapter:  # An adapter reshapes the pair itself.
      shape = lambda x: jax.tree.map(lambda a: a.shape, x)
      losses.check_inputs(term.loss,
                          shape(select(student_shapes, term.student)),
                          shape(select(teacher_shapes, term.teacher)))


def init_adapters(terms, student_shapes, teacher_shapes, rng,
                  num_examples: int):
  """Parameters and state of every term's adapter, keyed by term name,
  for models with outputs of `*_shapes` (`outputs`, shapes or arrays)."""
  params, state = {}, {}
  for i, term in enumerate(terms):
    adapter = term.make_adapter()
    if adapter is not None:
      zeros = lambda a: jnp.zeros((2, *a.shape[1:]), a.dtype)
      s, t = (select(student_shapes, term.student),
              select(teacher_shapes, term.teacher))
      init = lambda key, a=adapter, s=s, t=t: a.init(
          key, jax.tree.map(zeros, s), jax.tree.map(zeros, t), num_examples)
      # One program, as create_state's.
      params[term.name], state[term.name] = jax.jit(init)(
          jax.random.fold_in(rng, i))
  return params, state


class LogProbs:
  """The tempered log-probabilities log softmax(z / T), float32, of the
  models' outputs in one step: each computed once per model, output and
  temperature, and shared by the cross-entropy (`label_loss`) and every
  term whose loss is a divergence of them (`Term.on_log_probs`), so that
  their gradients meet before one backward pass through the softmax. The
  teacher's side is stop-gradient. A temperature that is not a Python
  number (a schedule's, a vectorized run's) is computed at each use."""

  def __init__(self, student_out, teacher_out):
    self.outputs = {'student': student_out, 'teacher': teacher_out}
    self.held = {}  # (side, output, temperature): log-probabilities.

  def __call__(self, side: str, key: str = 'logits', temperature=1.0):
    held = isinstance(temperature, Number)
    if held and (side, key, temperature) in self.held:
      return self.held[side, key, temperature]
    z = select(self.outputs[side], key)
    if side == 'teacher':
      z = jax.lax.stop_gradient(z)
    value = losses.divergences.tempered_log_softmax(z, temperature)
    if held:
      self.held[side, key, temperature] = value
    return value

  def holds(self, side: str, key: str, temperature) -> bool:
    """Whether these log-probabilities are computed already."""
    return isinstance(temperature, Number) and (side, key,
                                                temperature) in self.held


def outputs(logits, features) -> dict:
  return {'logits': logits, **features}


def teacher_outputs(teacher, variables, batch) -> dict:
  """A frozen teacher's outputs on `batch`: its forward pass on the inputs,
  or for several teachers (`kd.teachers.Teachers`) their combination, which
  may read the batch (routing by a column)."""
  if isinstance(teacher, teachers_lib.Teachers):
    return teacher.outputs(variables, batch)
  # A teacher of another tokenizer reads its own tokens (kd.data.paired).
  return outputs(*teacher.apply(
      variables, batch.get('teacher_image', batch['image']), train=False))


def apply_train(model, params, model_state, x, qat: bool = False):
  """Forward pass in training mode; returns logits, features, new state.
  `qat`: with simulated int8 weights and activations (kd.quantization)."""
  variables = {'params': params, **model_state}
  apply = functools.partial(quantization.apply, model) if qat else model.apply
  if model_state:
    (logits, feats), new_state = apply(
        variables, x, train=True, mutable=list(model_state))
    new_state = jax.lax.pmean(dict(new_state), AXIS)
  else:
    logits, feats = apply(variables, x, train=True)
    new_state = model_state
  return logits, feats, new_state


def apply_terms(terms, student_out, teacher_out, batch, step,
                aux_params=None, aux_state=None, rng=None, log_probs=None):
  """The distillation `terms` at training step `step`, the one place a step
  evaluates them: total = sum_k w_k(step) L_k, w_k the term's `weight_at`
  (schedule and warm-up), L_k its loss (scheduled arguments, adapter with
  its parameters `aux_params[name]` and state `aux_state[name]`, rng
  folded with k).

  Returns (total, metrics, new adapter state): metrics has each term's
  value under its name and, when scheduled, its weight under
  '<name>/weight'; the state has the new state of every term in
  `aux_state`. `log_probs` (`LogProbs`) shares the models' log-softmaxes
  between the terms.
  """
  aux_params, aux_state = aux_params or {}, aux_state or {}
  total, metrics, new_state = 0.0, {}, {}
  for k, term in enumerate(terms):
    value, state = term(student_out, teacher_out, batch,
                        aux_params.get(term.name), aux_state.get(term.name),
                        None if rng is None else jax.random.fold_in(rng, k),
                        step, log_probs)
    weight = term.weight_at(step)
    metrics[term.name] = value
    if term.is_scheduled:
      metrics[f'{term.name}/weight'] = jnp.asarray(weight, jnp.float32)
    if term.name in aux_state:
      new_state[term.name] = state
    total = total + weight * value
  return total, metrics, new_state


def apply_routed_terms(teachers, terms, student_out, teacher_out, batch,
                       step, aux_params=None, aux_state=None, rng=None,
                       log_probs=None):
  """`apply_terms` for routed teachers of several tokenizers
  (`kd.teachers.Teachers.groups`): each group's terms on its teachers'
  rows, values weighted by the group's share of the rows and summed per
  term. Returns (total, metrics, new adapter state) as `apply_terms`."""
  total, metrics, new_state = 0.0, {}, {}
  for group_terms, t_out, b, share in teachers.groups(terms, teacher_out,
                                                      batch):
    # Only the terms over the student's vocabulary read `log_probs`, and
    # only their group's teacher logits are the step's 'logits'.
    value, more, state = apply_terms(
        group_terms, student_out, t_out, b, step, aux_params, aux_state, rng,
        log_probs)
    total = total + share * value
    new_state.update(state)
    for name, v in more.items():  # A scheduled weight is every group's.
      metrics[name] = v if name.endswith('/weight') else (
          metrics.get(name, 0.0) + share * v)
  return total, metrics, new_state


def apply_gradients(state, tx, grads, new_model_state, new_aux_state=None):
  """`state` after one optimizer step on `grads` (over (params,
  aux_params)), averaged over the devices first; the model's and the
  adapters' new state replace the old (the adapters' merged over it)."""
  grads = jax.lax.pmean(grads, AXIS)
  updates, opt_state = tx.update(grads, state.opt_state,
                                 (state.params, state.aux_params))
  params, aux_params = optax.apply_updates((state.params, state.aux_params),
                                           updates)
  return state.replace(
      step=state.step + 1, params=params, model_state=new_model_state,
      opt_state=opt_state, aux_params=aux_params,
      aux_state={**state.aux_state, **(new_aux_state or {})})


def update(state, tx, loss_fn, *args):
  """One training update, the one every step makes: the gradient of
  `loss_fn((params, aux_params), *args) -> (loss, (new_model_state,
  new_aux_state, metrics, *outputs))` in `state`'s student and adapter
  parameters, averaged over `AXIS`, applied by `tx`; the model's and the
  adapters' new state carried. Returns (new state, metrics averaged over
  `AXIS`, *outputs): `outputs` (the shard's own, e.g. the student's
  predictions for a discriminator) come back as they are."""
  grads, (model_state, aux_state, metrics, *outputs) = jax.grad(
      loss_fn, has_aux=True)((state.params, state.aux_params), *args)
  return (apply_gradients(state, tx, grads, model_state, aux_state),
          jax.lax.pmean(metrics, AXIS), *outputs)


def accuracy(logits, labels, mask=None):
  return losses.masked_mean(metrics.hits(logits, labels).astype(jnp.float32),
                            mask)


def mixup(batch, rng, alpha: float):
  """Consistent teaching (Beyer et al., CVPR 2022): one mixup of the batch,
  x <- lam x + (1 - lam) x[perm], lam ~ Beta(alpha, alpha), seen by teacher
  and student alike. Adds `label_b` and `lam` for the mixed cross-entropy."""
  k1, k2 = jax.random.split(rng)
  lam = jax.random.beta(k1, alpha, alpha)
  perm = jax.random.permutation(k2, batch['image'].shape[0])
  return dict(batch, image=lam * batch['image'] + (1 - lam) * batch['image'][perm],
              label_b=batch['label'][perm], lam=lam)


def label_loss(logits, batch, label_smoothing: float = 0.0, log_q=None):
  """Cross-entropy with the batch's labels (`losses.classification`),
  averaged over its mask, mixed as the batch is (`mixup`); `log_q`: the
  logits' log-softmax where the step holds it already (`LogProbs`)."""
  if log_q is None:
    log_q = jax.nn.log_softmax(logits.astype(jnp.float32))
  ce = lambda labels: losses.masked_mean(
      losses.classification.cross_entropy_of_log_probs(
          log_q, labels, label_smoothing), batch.get('mask'))
  if 'lam' in batch:
    return batch['lam'] * ce(batch['label']) + (1 - batch['lam']) * ce(
        batch['label_b'])
  return ce(batch['label'])


def _on(value) -> bool:
  """Whether an optional number (0: off) is set; a traced one (a run's own
  value in runs trained together, `vectorized`) is."""
  return not isinstance(value, (int, float)) or value != 0


def step_rng(seed, state):
  """Per step and per device, so shards draw different random numbers."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed),
                                               state.step),
                            jax.lax.axis_index(AXIS))


def make_supervised_step(model: nn.Module, tx: optax.GradientTransformation,
                         label_smoothing: float = 0.0, seed: int = 0,
                         mixup_alpha: float = 0.0, qat: bool = False
                         ) -> Callable:
  """Cross-entropy training from labels: `step(state, batch)`."""

  def loss_fn(trainable, state, batch):
    params, _ = trainable
    logits, _, new_state = apply_train(model, params, state.model_state,
                                        batch['image'], qat)
    ce = label_loss(logits, batch, label_smoothing)
    return ce, (new_state, {}, {'loss': ce, 'ce': ce,
                                'accuracy': accuracy(logits, batch['label'],
                                                     batch.get('mask'))})

  def step(state, batch):
    if _on(mixup_alpha):
      batch = mixup(batch, step_rng(seed, state), mixup_alpha)
    return update(state, tx, loss_fn, state, batch)

  return step


def make_distill_step(student: nn.Module, teacher: nn.Module | None,
                      tx: optax.GradientTransformation, terms: tuple[Term, ...],
                      ce_weight: float, label_smoothing: float = 0.0,
                      seed: int = 0, mixup_alpha: float = 0.0,
                      qat: bool = False,
                      on_policy: tuple[float, Callable] | None = None
                      ) -> Callable:
  """Distillation from a frozen teacher: `step(state, teacher_vars, batch)`;
  with `teacher=None`, `step(state, batch)` and the teacher's outputs come in
  `batch['teacher']` (a teacher-output cache).

  loss = ce_weight * CE(student, labels) + sum_k weight_k * term_k.
  The teacher runs in inference mode and receives no gradient; adapters'
  parameters train with the student's. With `mixup_alpha` both models see
  the same mixed-up inputs (see `mixup`); with `qat` the student trains with
  simulated int8 (quantization-aware distillation). With `on_policy =
  (lmbda, sample)`, a step with probability lmbda first replaces the batch
  by `sample(student_variables, batch, rng)` (the student's own tokens,
  `kd.sampling.on_policy_batch`): GKD's mix of on- and off-policy data.
  """

  def loss_fn(trainable, state, teacher_out, batch, rng):
    params, aux_params = trainable
    logits, feats, new_state = apply_train(student, params,
                                            state.model_state, batch['image'],
                                            qat)
    student_out = outputs(logits, feats)
    # One log-softmax per model and temperature for the CE and the terms.
    log_probs = LogProbs(student_out, teacher_out)
    ce = label_loss(logits, batch, label_smoothing, log_probs('student'))
    metrics = {'ce': ce, 'accuracy': accuracy(logits, batch['label'],
                                              batch.get('mask'))}
    apply = (functools.partial(apply_routed_terms, teacher)
             if getattr(teacher, 'across', False) else apply_terms)
    distill, more, new_aux_state = apply(
        terms, student_out, teacher_out, batch, state.step, aux_params,
        state.aux_state, rng, log_probs)
    total = ce_weight * ce + distill
    metrics.update(more, loss=total)
    return total, (new_state, new_aux_state, metrics)

  def step(state, *args):
    *teacher_vars, batch = args
    rng = step_rng(seed, state)
    if _on(mixup_alpha):
      rng, mix_rng = jax.random.split(rng)
      batch = mixup(batch, mix_rng, mixup_alpha)
    if on_policy is not None:
      lmbda, sample = on_policy
      rng, sample_rng = jax.random.split(rng)
      # One draw for every shard (no device index): all take one branch.
      sampled = jax.random.bernoulli(
          jax.random.fold_in(jax.random.key(seed + 1), state.step), lmbda)
      variables = {'params': state.params, **state.model_state}
      batch = jax.lax.cond(sampled, lambda b: sample(variables, b, sample_rng),
                           lambda b: b, batch)
    if teacher is None:  # Outputs read from the teacher cache (kd.cache).
      teacher_out = batch['teacher']
    else:
      teacher_out = teacher_outputs(teacher, teacher_vars[0], batch)
    teacher_out = jax.lax.stop_gradient(teacher_out)
    new, metrics = update(state, tx, loss_fn, state, teacher_out, batch, rng)
    if on_policy is not None:
      metrics['on_policy'] = sampled.astype(jnp.float32)  # The same on all.
    return new, metrics

  return step


def _masked_sums(logits, batch) -> dict:
  """`correct` and cross-entropy `loss` summed over the unmasked examples."""
  mask = batch['mask']
  return {'correct': jnp.sum(mask * metrics.hits(logits, batch['label'])),
          'loss': jnp.sum(mask * losses.classification.cross_entropy(
              logits, batch['label']))}


HEADS = ('cls', 'dist')  # DeiT's class and distillation heads.


def make_eval_step(model: nn.Module, teacher: nn.Module | None = None
                   ) -> Callable:
  """Summed test statistics of a masked batch: `step(vars[, teacher_vars], batch)`.

  Returns sums over the global batch (psum): `count`, `correct`, `loss`,
  `correct_<head>` for each of `HEADS` the student has (features
  '<head>_logits'), `bytes` for text, and with a teacher `agree` (top-1
  agreement) and `kl` (KL(teacher || student)).
  Without `teacher`, teacher logits in `batch['teacher']['logits']` (from a
  sharded teacher) give the same two.
  """

  def stats(variables, batch, teacher_vars=None):
    logits, feats = model.apply(variables, batch['image'], train=False)
    mask = batch['mask']
    out = {'count': jnp.sum(mask), **_masked_sums(logits, batch)}
    for head in HEADS:  # A student predicting with the mean of its heads.
      if f'{head}_logits' in feats:
        out[f'correct_{head}'] = jnp.sum(
            mask * metrics.hits(feats[f'{head}_logits'], batch['label']))
    if 'bytes' in batch:  # Text: the bytes the targets cover.
      out['bytes'] = jnp.sum(batch['bytes'])
    if teacher is not None or 'teacher' in batch:
      t_logits = (batch['teacher'] if teacher is None else teacher_outputs(
          teacher, teacher_vars, batch))['logits']
      kl = losses.divergences.forward_kl(logits, t_logits)
      out['agree'] = jnp.sum(mask * metrics.agreement(logits, t_logits))
      out['kl'] = jnp.sum(mask * kl)
    return jax.lax.psum(out, AXIS)

  if teacher is None:
    return stats
  return lambda variables, teacher_vars, batch: stats(variables, batch,
                                                      teacher_vars)


def ensemble(logits_seq):
  """Log of the mean of the members' distributions: an ensemble's logits."""
  log_p = jnp.stack([jax.nn.log_softmax(l.astype(jnp.float32))
                     for l in logits_seq])
  return jax.nn.logsumexp(log_p, 0) - jnp.log(len(log_p))


def make_named_eval_step(logits_fn: Callable) -> Callable:
  """Summed test statistics of several predictors at once (students,
  teachers, ensembles): `step(*args, batch)` with `logits_fn(*args, image)`
  -> {name: logits}. Returns psums `count` and per name `<name>/correct`
  and `<name>/loss`."""

  def step(*args):
    *args, batch = args
    out = {'count': jnp.sum(batch['mask'])}
    for name, logits in logits_fn(*args, batch['image']).items():
      out.update({f'{name}/{k}': v
                  for k, v in _masked_sums(logits, batch).items()})
    return jax.lax.psum(out, AXIS)

  return step


def multi_step(step: Callable, k: int) -> Callable:
  """`k` training steps in one call: `step(state, *extra, batch)` scanned
  over `batches` stacked on a leading axis of size `k`. Returns the last
  state and each metric summed over the `k` steps (`kd.loop` logs means of
  sums)."""
  if k == 1:
    return step

  # XLA:CPU runs a convolution inside a while loop about 60x slower than
  # outside (a ResNet-8x4 step: 53 s vs 0.87 s), so on the CPU the k steps
  # are unrolled into one program (0.81 s a step), at k times the compile.
  unroll = True if jax.default_backend() == 'cpu' else 1

  def run(state, *args):
    *extra, batches = args
    state, metrics = jax.lax.scan(lambda s, b: step(s, *extra, b), state,
                                  batches, unroll=unroll)
    return state, jax.tree.map(lambda m: jnp.sum(m, 0), metrics)

  return run


def vectorized(make_step: Callable, values, stream_of=None,
               teacher_forward: Callable | None = None) -> Callable:
  """Several runs in one step: `step(states, *shared, batches)` with the
  runs' states and batches stacked on a leading run axis, running
  `make_step(v_r)(state_r, *shared, batch_r)` for each run r, where `v_r`
  is run r's entry of `values` (a pytree of arrays with the run axis: its
  seed, learning rate, temperatures...). `shared` (a teacher) is one for
  all runs.

  With `stream_of` (int array: run r reads batch stream_of[r]), `batches`
  holds each distinct data stream's batch once. With `teacher_forward(
  *shared, images) -> outputs` as well, the teacher runs once per distinct
  batch (not once per run: a temperature sweep shares it) and each run's
  step, built for a cached teacher, reads them in `batch['teacher']`."""

  def step(states, *args):
    *shared, batches = args
    if teacher_forward is not None:
      batches = {**batches, 'teacher': jax.lax.stop_gradient(jax.vmap(
          lambda images: teacher_forward(*shared, images))(
              batches.get('teacher_image', batches['image'])))}
      shared = ()
    if stream_of is not None:
      batches = jax.tree.map(lambda x: x[stream_of], batches)
    return jax.vmap(lambda v, s, b: make_step(v)(s, *shared, b))(
        values, states, batches)

  return step
