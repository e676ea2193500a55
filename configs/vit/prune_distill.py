"""Prune, then distil a ViT on MNIST-1D: a ViT teacher (patch 4, width
`width`, depth 4, `heads` heads; configs/vit/distill.py's AdamW recipe)
pruned to `heads`, `embed` and `mlp` fractions of its heads, embedding
channels and MLP neurons (0.5 each: about a quarter of its parameters), by
`method`:
  random    a ViT of the pruned shape from random init, KD
  width     pruned by activation importance (kd.prune), then KD
  width_ce  pruned by activation importance, then labels alone (no teacher)
KD is the temperature-`temperature` KL to the teacher alone (`ce_weight`=0,
as Minitron). Stages: teacher, then (for the pruned methods) `pruned`
(its summary holds the pruned ViT's test accuracy before any training),
then the student, tested every `eval_every` steps. `teacher_dir=PATH`
shares one trained teacher between runs.

  python -m kd.main --config=configs/vit/prune_distill.py:method=width,seed=0 \\
      --workdir=runs/vit_prune_distill/width_s0
"""
from configs.vit.distill import student_recipe
from kd import prune
from kd.config import parse_args, prune_distill_pipeline, term

METHODS = ('random', 'width', 'width_ce')


def get_config(arg: str | None = None):
  a = parse_args(arg, method='width', teacher_dir='', teacher_steps=4000,
                 steps=2000, seed=0, width=64, depth=4, heads=4,
                 patch_size=4, head_fraction=0.5, embed=0.5, mlp=0.5,
                 temperature=4.0, ce_weight=0.0, calibration_batches=10,
                 eval_every=250)
  method = a['method']
  if method not in METHODS:
    raise ValueError(f'unknown method {method!r}; valid: {METHODS}')
  vit = {k: a[k] for k in ('patch_size', 'width', 'depth', 'heads')}
  teacher = student_recipe('deit_tiny', vit, 0, a['teacher_steps'])
  width = (f'heads:{a["head_fraction"]},embed:{a["embed"]},'
           f'mlp:{a["mlp"]}')
  small = prune.pruned_kwargs('deit_tiny', vit, width)
  student = student_recipe('deit_tiny', small, a['seed'], a['steps'])
  student.eval_every = a['eval_every']
  return prune_distill_pipeline(
      teacher, student,
      None if method == 'random' else student_recipe(
          'deit_tiny', vit, 0, a['teacher_steps']),
      dict(width=width, calibration_batches=a['calibration_batches']),
      None if method == 'width_ce' else {
          'kd': term('kd', 1.0, temperature=a['temperature'])},
      a['ce_weight'], a['teacher_dir'])
