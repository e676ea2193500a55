"""Prune, then distil (Minitron): the 0.82M byte-level teacher of
`configs/lm/train.py` compressed to about 0.2M parameters, by `method`:
  random    a student of the width-pruned shape from random init, KD
  strided   the teacher's width at `strided_layers` layers, from every k-th
            teacher layer (DistilBERT's init), KD
  width     pruned in width (`width`: heads, MLP neurons, embedding
            channels by activation importance), then KD
  depth     pruned in depth (`depth`: the layers kept, ranked by ShortGPT's
            cosine block influence or by the held-out loss), then KD
  both      pruned in width and depth (`both_width`, `both_depth`), then KD
  width_ce  pruned in width, then cross-entropy alone (no teacher)
KD is forward KL to the teacher's next-token distribution alone (no
cross-entropy; Minitron found logit KL alone best). Stages: teacher, then
(for the pruned methods) `pruned` (kd.prune: its summary holds the pruned
model's test figures before any training), then the student, tested every
`eval_every` steps (bits per byte against training tokens).
`teacher_dir=PATH` shares one trained teacher between runs.

  python -m kd.main --config=configs/lm/prune_distill.py:method=width,seed=0 \\
      --workdir=runs/prune_distill/width_s0
"""
from configs.lm import train as recipes
from kd import prune
from kd.config import parse_args, prune_distill_pipeline, term

METHODS = ('random', 'strided', 'width', 'depth', 'both', 'width_ce')
PRUNED = {'width': ('width', ''), 'depth': ('', 'depth'),
          'both': ('both_width', 'both_depth'), 'width_ce': ('width', '')}


def get_config(arg: str | None = None):
  a = parse_args(arg, method='width', teacher_dir=str, teacher_size='teacher',
                 teacher_steps=2000, width='heads:0.5,mlp:0.5,embed:0.5',
                 depth='keep:1,by:cosine',
                 both_width='heads:0.75,mlp:0.5,embed:0.75',
                 both_depth='keep:2,by:cosine', strided_layers=1,
                 calibration_batches=16, eval_every=50, **recipes.DEFAULTS)
  method = a.pop('method')
  if method not in METHODS:
    raise ValueError(f'unknown method {method!r}; valid: {METHODS}')
  shared = recipes.data_args(a)
  teacher = recipes.recipe(a['teacher_size'], 0, a['teacher_steps'], **shared)
  t_kwargs = teacher.model.kwargs.to_dict()
  student = recipes.recipe(a['teacher_size'], a['seed'], a['steps'], **shared)
  student.eval_every = a['eval_every']
  pruned = targets = None
  if method in PRUNED:
    width, depth = (a[k] if k else '' for k in PRUNED[method])
    student.model.kwargs = prune.pruned_kwargs('transformer_lm', t_kwargs,
                                               width, depth)
    pruned = recipes.recipe(a['teacher_size'], 0, a['teacher_steps'],
                            **shared)
    targets = dict(width=width, depth=depth,
                   calibration_batches=a['calibration_batches'])
  elif method == 'random':
    student.model.kwargs = prune.pruned_kwargs('transformer_lm', t_kwargs,
                                               a['width'])
  else:  # strided
    student.model.kwargs.num_layers = a['strided_layers']
    student.update(init_from='teacher', init_from_layers='strided')
  return prune_distill_pipeline(
      teacher, student, pruned, targets,
      None if method == 'width_ce' else {'kl': term('forward_kl', 1.0)},
      teacher_dir=a['teacher_dir'])
