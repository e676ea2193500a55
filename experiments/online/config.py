"""Deep mutual learning on MNIST-1D: students trained together from
scratch, each from labels and from its peers (reference recipe).

  python -m experiments.online.train \
      --config=experiments/online/config.py:students=mlp+mlp,seed=0 \
      --workdir=runs/online/mlp+mlp_s0

Arguments: `students` ('+'-joined models of configs/mnist1d/train.py),
`seed`, `steps`, `temperature` (default 1, as the paper), `mutual_weight`
(default 1): the `kd` term `distill.terms.mutual`, T^2 KL(peer || student).
"""
import ml_collections as mc

from configs.mnist1d import train as recipes
from kd.config import parse_args, term


def get_config(arg: str | None = None):
  a = parse_args(arg, students='mlp+mlp', seed=0, steps=6000, temperature=1.0,
                 mutual_weight=1.0)
  names = a['students'].split('+')
  c = recipes.recipe('mlp', a['seed'], a['steps'])
  c.online = mc.ConfigDict(dict(
      students={f'student_{i}': dict(name=n, kwargs=recipes.MODELS[n])
                for i, n in enumerate(names)}))
  c.distill.terms.mutual = term('kd', a['mutual_weight'],
                                temperature=a['temperature'])
  return c
