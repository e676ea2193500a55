"""Multi-teacher distillation on MNIST-1D: an MLP student (100-100) from K
teachers trained by `configs/mnist1d/train.py`, the reference recipe.

  python -m experiments.multi_teacher.train \
      --config=experiments/multi_teacher/config.py:mode=confidence,seed=0 \
      --workdir=runs/multi_teacher/confidence_s0

Arguments: `mode` (see weights.MODES), `seed`, `steps`, `temperature`
(default 4), `teachers` ('+'-joined model:seed pairs, default
cnn1d:0+cnn1d:1+cnn1d:2+gru:0), `root` (the folder of those runs, named as
launch/specs/mnist1d_baselines.py names them: `model=M__seed=S`),
`weights` ('+'-joined, for mode=fixed), `hint` (a teacher index: adds a
FitNets hint from that teacher's embedding to the student's, through a
learned regressor).
"""
import ml_collections as mc

from configs.mnist1d import train as recipes
from kd.config import parse_args, term
from experiments.multi_teacher import weights as weights_lib

TEACHERS = 'cnn1d:0+cnn1d:1+cnn1d:2+gru:0'


def get_config(arg: str | None = None):
  a = parse_args(arg, mode='mean', seed=0, steps=6000,
                 root='runs/mnist1d_baselines', teachers=TEACHERS, weights='',
                 temperature=4.0, hint=int)
  mode = a['mode']
  if mode not in weights_lib.MODES:
    raise ValueError(f'unknown mode {mode!r}; valid: {weights_lib.MODES}')
  c = recipes.recipe('mlp', a['seed'], a['steps'])
  root = a['root']
  pairs = [p.split(':') for p in a['teachers'].split('+')]
  fixed = tuple(float(w) for w in a['weights'].split('+') if w)
  if mode == 'fixed' and len(fixed) != len(pairs):
    raise ValueError(f'mode=fixed needs {len(pairs)} weights=w1+w2+...')
  c.multi = mc.ConfigDict(dict(
      teachers=tuple(f'{root}/model={m}__seed={s}' for m, s in pairs),
      mode=mode, weights=fixed, temperature=a['temperature'],
      ce_weight=1.0, kd_weight=1.0,
      term_teachers=mc.ConfigDict()))  # distill.terms name -> teacher index.
  if a['hint'] is not None:
    c.distill.terms.hint = term('hint', 1.0, student='embedding',
                                teacher='embedding', adapter='regressor')
    c.multi.term_teachers.hint = a['hint']
  return c
