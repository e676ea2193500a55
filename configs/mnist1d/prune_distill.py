"""Prune, then distil on MNIST-1D: the reference cnn1d teacher
(`configs/mnist1d/train.py`: conv channels 32, 32, 32, dense 128) pruned
to `channels` of its conv channels and `dense` of its dense units
(fractions or sizes; 0.5, 0.5: about a quarter of its parameters), by
`method`:
  random    a student of the pruned shape from random init, KD
  width     pruned by activation importance (kd.prune.conv), then KD
  width_l1  pruned by filter L1 norm (Li et al. 2017), then KD
  width_ce  pruned by activation importance, then labels alone (no teacher)
KD is the temperature-`temperature` KL to the teacher alone
(`ce_weight`=0: Minitron's logit-only distillation). Stages: teacher, then
(for the pruned methods) `pruned` (kd.prune; its summary holds the pruned
net's test accuracy before any training), then the student, tested every
`eval_every` steps (accuracy against training examples).
`teacher_dir=PATH` shares one trained teacher between runs.

  python -m kd.main --config=configs/mnist1d/prune_distill.py:method=width,seed=0 \\
      --workdir=runs/mnist1d_prune_distill/width_s0
"""
from configs.mnist1d import train as recipes
from kd import prune
from kd.config import parse_args, prune_distill_pipeline, term

METHODS = ('random', 'width', 'width_l1', 'width_ce')
BY = {'width': 'activation', 'width_l1': 'l1', 'width_ce': 'activation'}


def _target(value: float) -> str:
  """kd.prune's text: a fraction (0.5, 1.0) or a size (16)."""
  return str(int(value)) if value > 1 and value == int(value) else str(value)


def get_config(arg: str | None = None):
  a = parse_args(arg, method='width', teacher_dir='', teacher_steps=6000,
                 steps=6000, seed=0, channels=0.5, dense=0.5, temperature=4.0,
                 ce_weight=0.0, lr=1e-2, calibration_batches=10,
                 eval_every=250)
  method = a['method']
  if method not in METHODS:
    raise ValueError(f'unknown method {method!r}; valid: {METHODS}')
  teacher = recipes.recipe('cnn1d', 0, a['teacher_steps'])
  t_kwargs = teacher.model.kwargs.to_dict()
  width = (f'channels:{_target(a["channels"])},dense:{_target(a["dense"])},'
           f'by:{BY.get(method, "activation")}')
  student = recipes.recipe('cnn1d', a['seed'], a['steps'])
  student.model.kwargs = prune.pruned_kwargs('cnn1d', t_kwargs, width)
  student.optimizer.lr = a['lr']
  student.eval_every = a['eval_every']
  return prune_distill_pipeline(
      teacher, student,
      None if method == 'random' else recipes.recipe('cnn1d', 0,
                                                     a['teacher_steps']),
      dict(width=width, calibration_batches=a['calibration_batches']),
      None if method == 'width_ce' else {
          'kd': term('kd', 1.0, temperature=a['temperature'])},
      a['ce_weight'], a['teacher_dir'])
