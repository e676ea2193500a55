"""Optimizers and learning-rate schedules from `config.optimizer`."""
import optax

from kd.names import LR_SCHEDULES as SCHEDULES, OPTIMIZERS


def schedule(opt, total_steps: int, lr=None) -> optax.Schedule:
  """Linear warm-up, then constant, cosine decay to 0, or step decay
  (lr * decay_factor at each of `boundaries`, given as steps). `lr`: the
  peak learning rate instead of `opt.lr` (a traced value for runs trained
  together, `kd.steps.vectorized`)."""
  lr = opt.lr if lr is None else lr
  if opt.schedule not in SCHEDULES:
    raise ValueError(f'unknown schedule {opt.schedule!r}; valid: {SCHEDULES}')
  decay_steps = max(total_steps - opt.warmup_steps, 1)
  if opt.schedule == 'constant':
    main = optax.constant_schedule(lr)
  elif opt.schedule == 'cosine':
    main = optax.cosine_decay_schedule(lr, decay_steps)
  else:
    main = optax.piecewise_constant_schedule(
        lr, {int(b) - opt.warmup_steps: opt.decay_factor
                 for b in opt.boundaries})
  if not opt.warmup_steps:
    return main
  warmup = optax.linear_schedule(0.0, lr, opt.warmup_steps)
  return optax.join_schedules([warmup, main], [opt.warmup_steps])


def create(opt, total_steps: int, lr=None
           ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optimizer and its schedule (peak `lr`, default `opt.lr`);
  `total_steps` counts batches, so with `accumulate_steps=k` the schedule
  spans total_steps / k updates."""
  if opt.name not in OPTIMIZERS:
    raise ValueError(f'unknown optimizer {opt.name!r}; valid: {OPTIMIZERS}')
  lr = schedule(opt, max(total_steps // opt.accumulate_steps, 1), lr)
  if opt.name == 'sgd':
    # Coupled L2 weight decay, as in the PyTorch recipes papers report.
    tx = optax.chain(optax.add_decayed_weights(opt.weight_decay),
                     optax.sgd(lr, momentum=opt.momentum or None,
                               nesterov=opt.nesterov))
  elif opt.name == 'adam':
    tx = optax.adam(lr)
  else:
    tx = optax.adamw(lr, weight_decay=opt.weight_decay)
  if opt.grad_clip:
    tx = optax.chain(optax.clip_by_global_norm(opt.grad_clip), tx)
  if opt.accumulate_steps > 1:
    # Gradients of k consecutive batches are averaged into one update; the
    # schedule counts updates.
    tx = optax.MultiSteps(tx, every_k_schedule=opt.accumulate_steps)
  return tx, lr
