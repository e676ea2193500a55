"""Defaults shared by every run config. A config file under `configs/` starts
from `run_config()` (one run) or `pipeline_config(...)` (named stages run in
order, later stages using earlier ones as teachers)."""
import ml_collections as mc


def run_config() -> mc.ConfigDict:
  c = mc.ConfigDict()
  c.seed = 0
  c.data = mc.ConfigDict(dict(
      name='kd_digits', data_dir='', download=False, augment=True,
      image_size=0, shuffle_buffer=10_000, eval_split='test',
      exclude_classes=(),  # Left out of training (a transfer set without them).
      process_split='shard'))  # Or 'slice': see kd.data.train_batches.
  c.model = mc.ConfigDict(dict(name='mlp', kwargs=mc.ConfigDict()))
  c.dtype = 'float32'
  c.batch_size = 64  # Global, split over all devices.
  c.eval_batch_size = 256
  c.eval_every = 0  # Steps between test evaluations; 0: only at the end.
  c.steps = 1000
  c.optimizer = mc.ConfigDict(dict(
      name='adam', lr=1e-3, momentum=0.9, nesterov=False, weight_decay=0.0,
      schedule='cosine', warmup_steps=0, boundaries=(), decay_factor=0.1,
      grad_clip=0.0, accumulate_steps=1))
  # A finished run (or earlier pipeline stage) whose student and matching
  # adapters start this run: the second stage of FitNets, FT and AB.
  c.init_from = ''
  c.label_smoothing = 0.0
  # > 0: mixup of each batch; a teacher sees the student's mixed inputs
  # (consistent teaching, FunMatch).
  c.mixup_alpha = 0.0
  # Distillation: empty teacher.workdir means a supervised run.
  c.distill = mc.ConfigDict(dict(
      teacher=mc.ConfigDict(dict(
          workdir='', model='', kwargs=mc.ConfigDict(),
          # Teacher compute dtype; 'auto': bfloat16 on accelerators,
          # float32 on CPU (where bfloat16 is emulated and slower).
          dtype='auto',
          # Read the teacher's outputs from a cache built once (kd.cache)
          # instead of running it; needs inputs without augmentation.
          cache=False, cache_dir='',
          # > 1: the teacher's parameters split over a `model` mesh axis of
          # this size (parallel='mesh'), for teachers too big for a device.
          model_shards=1,
          # Distill from a teacher run that has not finished (its latest
          # checkpoint; the summary's teacher_step says which).
          allow_unfinished_teacher=False)),
      ce_weight=1.0,
      terms=mc.ConfigDict(),
      # Train with simulated int8 (kd.quantization) for a better int8 export.
      quantization_aware=False))
  c.parallel = 'pmap'
  c.log_every = 100
  c.checkpoint_every = 500
  c.keep_checkpoints = 2
  c.wandb = mc.ConfigDict(dict(
      mode='offline', project='kd', group='', tags=(), name=''))
  c.evaluate = mc.ConfigDict(dict(latency=True))
  c.export = mc.ConfigDict(dict(formats=(), representative_examples=256))
  return c


def term(loss: str, weight: float = 1.0, student: str = 'logits',
         teacher: str = 'logits', adapter: str = '',
         adapter_kwargs: dict | None = None, **kwargs) -> mc.ConfigDict:
  """One distillation term of `config.distill.terms`: `loss` (a name in
  `kd.losses.LOSSES`) between the student output `student` and the teacher
  output `teacher` ('logits' or a feature name), through an optional
  learnable `adapter` (a name in `kd.adapters.ADAPTERS`)."""
  return mc.ConfigDict(dict(
      loss=loss, weight=weight, student=student, teacher=teacher,
      kwargs=mc.ConfigDict(kwargs), adapter=adapter,
      adapter_kwargs=mc.ConfigDict(adapter_kwargs or {})))


def pipeline_config(**stages: mc.ConfigDict) -> mc.ConfigDict:
  """Stages run in the order given; a stage's `distill.teacher.workdir` and
  `init_from` may name an earlier stage."""
  c = mc.ConfigDict()
  c.stage_order = tuple(stages)
  c.stages = mc.ConfigDict(stages)
  c.stage_dirs = mc.ConfigDict()  # Stage -> directory, instead of WORKDIR/stage.
  return c
