"""Adversarial distillation (Xu et al. 2017; Wang et al., AAAI 2018).

  python -m experiments.adversarial.train \
      --config=experiments/adversarial/config.py:form=least_squares,seed=0 \
      --workdir=runs/adversarial/ls_s0

A discriminator D (an MLP with its own Adam state) learns to tell the
teacher's softened outputs softmax(t / T), or its logits — optionally with
the pooled embedding (the student's through a learned linear map when widths
differ) and the one-hot label — from the student's. Both updates happen in
one jitted, data-parallel step: the student minimises
  ce_weight CE + sum_k w_k L_k + adv_weight G(D(s)),
the terms L_k of `config.distill.terms` (by default the KD term
T^2 KL(teacher || student) with weight `kd_weight`; any term, schedule and
adapter works as in `kd.main`) against the current D, then D takes
`disc_steps` updates on the teacher's and that step's student outputs (see
`discriminator` for G and D's losses).
`disc_accuracy` near 0.5 in the log means the game is balanced.
"""

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from experiments.adversarial import discriminator as disc_lib
from kd import main as kd_main
from kd import runs
from kd import steps
from kd import train as kd_train
from kd import variant
from kd.losses import divergences
from kd.parallel import AXIS


@flax.struct.dataclass
class AdversarialState:
  student: steps.TrainState  # aux_params['proj']: the embedding map, if any.
  disc_params: dict
  disc_opt_state: optax.OptState

  @property
  def step(self):
    return self.student.step


def disc_input(logits, embedding, labels, temperature: float, num_classes: int,
               conditional: bool, raw_logits: bool = False):
  """[B, D]: what the discriminator sees of one model's outputs: the logits
  themselves (`raw_logits`, as Xu et al.) or softmax(logits / T)."""
  logits = logits.astype(jnp.float32)
  parts = [logits if raw_logits else
           divergences.tempered_softmax(logits, temperature)]
  if embedding is not None:
    parts.append(embedding.astype(jnp.float32))
  if conditional:
    parts.append(jax.nn.one_hot(labels, num_classes))
  return jnp.concatenate(parts, -1)


def make_step(student, teacher, disc, tx, disc_tx, a, num_classes: int,
              terms=(), seed: int = 0):
  """`step(state, teacher_vars, batch)` of an `AdversarialState`; `a` is
  `config.adversarial`, `terms` the distillation terms (`kd.steps.Term`)."""
  form, temp = a.form, a.temperature

  def embed(feats, proj_params):
    if not a.embedding:
      return None
    e = feats['embedding']
    if proj_params:
      e = nn.Dense(proj_params['kernel'].shape[-1]).apply(
          {'params': proj_params}, e)
    return e

  def student_loss(trainable, state, t_out, batch, rng):
    params, aux = trainable
    s = state.student
    logits, feats, new_model_state = steps.apply_train(
        student, params, s.model_state, batch['image'])
    s_in = disc_input(logits, embed(feats, aux.get('proj')), batch['label'],
                      temp, num_classes, a.conditional, a.raw_logits)
    ce = steps.label_loss(logits, batch)
    distill, metrics, new_aux_state = steps.apply_terms(
        terms, steps.outputs(logits, feats), t_out, batch, s.step, aux,
        s.aux_state, rng)
    adv = disc_lib.generator_loss(disc.apply(state.disc_params, s_in), form)
    total = a.ce_weight * ce + distill + a.adv_weight * adv
    metrics.update(loss=total, ce=ce, adv=adv, accuracy=steps.accuracy(
        logits, batch['label'], batch.get('mask')))
    return total, (new_model_state, new_aux_state, metrics,
                   jax.lax.stop_gradient(s_in))

  def disc_update(carry, _):
    params, opt_state, t_in, s_in = carry

    def loss_fn(p):
      d_t, d_s = disc.apply(p, t_in), disc.apply(p, s_in)
      return disc_lib.discriminator_loss(d_t, d_s, form), (d_t, d_s)

    (loss, (d_t, d_s)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params)
    grads = jax.lax.pmean(grads, AXIS)
    updates, opt_state = disc_tx.update(grads, opt_state, params)
    stats = {'disc_loss': loss,
             'disc_accuracy': disc_lib.accuracy(d_t, d_s, form)}
    return (optax.apply_updates(params, updates), opt_state, t_in, s_in), stats

  def step(state, teacher_vars, batch):
    logits, feats = teacher.apply(teacher_vars, batch['image'], train=False)
    t_out = jax.lax.stop_gradient(steps.outputs(logits, feats))
    t_in = disc_input(t_out['logits'],
                      t_out['embedding'] if a.embedding else None,
                      batch['label'], temp, num_classes, a.conditional,
                      a.raw_logits)
    student_state, metrics, s_in = steps.update(
        state.student, tx, student_loss, state, t_out, batch,
        steps.step_rng(seed, state.student))
    (d_params, d_opt, _, _), d_stats = jax.lax.scan(
        disc_update, (state.disc_params, state.disc_opt_state, t_in, s_in),
        None, length=a.disc_steps)
    # Statistics of the first discriminator update: before it, D was the
    # one the student played against.
    metrics.update(jax.lax.pmean(jax.tree.map(lambda x: x[0], d_stats), AXIS))
    return AdversarialState(student_state, d_params, d_opt), metrics

  return step


def init_state(config, student, teacher, disc, tx, disc_tx, example,
               num_classes, terms=(), num_examples: int = 0
               ) -> AdversarialState:
  """The student's state (with the terms' adapters and, when widths
  differ, the embedding map `proj`) and the discriminator's."""
  a = config.adversarial
  rng = jax.random.key(config.seed)
  shapes = lambda m: steps.outputs(*jax.eval_shape(lambda: m.apply(
      m.init(rng, example, train=False), example, train=False)))
  s_shapes, t_shapes = shapes(student), shapes(teacher)
  steps.check_terms(terms, s_shapes, t_shapes)
  variant.check_term_names(terms, ('accuracy', 'adv', 'ce', 'disc_accuracy',
                                   'disc_loss', 'loss', 'proj'), 'adversarial')
  aux, aux_state = steps.init_adapters(
      terms, s_shapes, t_shapes, jax.random.key(config.seed + 1),
      num_examples)
  width = t_shapes['embedding'].shape[-1]
  if a.embedding and s_shapes['embedding'].shape[-1] != width:
    aux['proj'] = nn.Dense(width).init(
        jax.random.fold_in(rng, 1),
        jnp.zeros((1, s_shapes['embedding'].shape[-1])))['params']
  student_state = steps.create_state(student, tx, rng, example, aux,
                                     aux_state)
  dim = (num_classes + (width if a.embedding else 0)
         + (num_classes if a.conditional else 0))
  disc_params = disc.init(jax.random.fold_in(rng, 2), jnp.zeros((1, dim)))
  return AdversarialState(student_state, disc_params,
                          disc_tx.init(disc_params))


def train(config, workdir: str) -> dict:
  a = config.adversarial
  s = variant.setup(config, 'adversarial')
  student = variant.create_model(s, config.model)
  runs.check_teacher(a.teacher_dir,
                     config.distill.teacher.allow_unfinished_teacher)
  _, teacher, teacher_vars, _ = runs.load_run(a.teacher_dir)
  disc = disc_lib.Discriminator(tuple(a.disc_hidden))
  disc_tx = optax.adam(a.disc_lr, b1=0.5)  # b1 = 0.5: the usual GAN choice.
  terms = kd_train.distill_terms(config)
  state = init_state(config, student, teacher, disc, s.tx, disc_tx, s.example,
                     s.num_classes, terms, s.num_examples)
  train_step = s.parallel.wrap(
      make_step(student, teacher, disc, s.tx, disc_tx, a, s.num_classes,
                terms, config.seed),
      num_replicated=2)
  p_teacher = s.parallel.replicate(teacher_vars)
  eval_fn = s.parallel.wrap(steps.make_named_eval_step(
      lambda v, tv, x: {'student': student.apply(v, x, train=False)[0],
                        'teacher': teacher.apply(tv, x, train=False)[0]}), 2,
                            donate_first=False)
  return variant.train_and_test(
      config, workdir, f'adversarial/{a.form}', s, state, train_step,
      (p_teacher,), eval_fn, lambda p: ({'params': p.student.params,
                                         **p.student.model_state}, p_teacher))


if __name__ == '__main__':
  kd_main.run_variant(train)
