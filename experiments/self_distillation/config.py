"""Self-distillation on MNIST-1D: the MLP (100-100, reference recipe)
distilling into itself, with no separate teacher.

  python -m experiments.self_distillation.train \
      --config=experiments/self_distillation/config.py:mode=byot,seed=0 \
      --workdir=runs/self_distillation/byot_s0

Arguments: `mode` (byot | teacher_free), `seed`, `steps`, `model` (a
model of configs/mnist1d/train.py), `taps` ('+'-joined features that get an
auxiliary classifier, byot; default hidden0 for the MLP), `alpha`,
`temperature`, `feature_weight` (byot), `correct_prob` (teacher_free).
Defaults: byot alpha 0.3, T 3, feature weight 0.01; teacher_free alpha 0.5,
T 20, correct probability 0.9. The distillation is `config.distill.terms`:
'kd' (weight alpha, at T) and, for byot, 'hint' (`hidden_mse` between the
embeddings, weight feature_weight); `self_distill.alpha` leaves the label
cross-entropy of each student (a head, or the model) weight 1 - alpha.
"""
import ml_collections as mc

from configs.mnist1d import train as recipes
from kd.config import parse_args, term

MODES = ('byot', 'teacher_free')
DEFAULTS = {'byot': dict(alpha=0.3, temperature=3.0),
            'teacher_free': dict(alpha=0.5, temperature=20.0)}
TAPS = {'mlp': 'hidden0', 'cnn1d': 'stage0+stage1'}


def get_config(arg: str | None = None):
  a = parse_args(arg, mode='byot', model='mlp', seed=0, steps=6000, taps=str,
                 alpha=float, temperature=float, feature_weight=0.01,
                 correct_prob=0.9)
  mode = a['mode']
  if mode not in MODES:
    raise ValueError(f'unknown mode {mode!r}; valid: {MODES}')
  model = a['model']
  c = recipes.recipe(model, a['seed'], a['steps'])
  d = DEFAULTS[mode]
  alpha = d['alpha'] if a['alpha'] is None else a['alpha']
  temperature = (d['temperature'] if a['temperature'] is None
                 else a['temperature'])
  c.self_distill = mc.ConfigDict(dict(
      mode=mode,
      taps=tuple((a['taps'] or TAPS.get(model, '')).split('+')),
      alpha=alpha, correct_prob=a['correct_prob']))
  c.distill.terms.kd = term('kd', alpha, temperature=temperature)
  if mode == 'byot':
    c.distill.terms.hint = term('hidden_mse', a['feature_weight'],
                                student='embedding', teacher='embedding')
  return c
