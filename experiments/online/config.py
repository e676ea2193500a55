"""Deep mutual learning on MNIST-1D: students trained together from
scratch, each from labels and from its peers (reference recipe).

  python -m experiments.online.train \
      --config=experiments/online/config.py:students=mlp+mlp,seed=0 \
      --workdir=runs/online/mlp+mlp_s0

Arguments: `students` ('+'-joined models of configs/mnist1d/train.py),
`seed`, `steps`, `temperature` (default 1, as the paper), `mutual_weight`
(default 1).
"""
import ml_collections as mc

from configs.mnist1d import train as recipes


def get_config(arg: str | None = None):
  a = recipes.parse(arg)
  names = a.get('students', 'mlp+mlp').split('+')
  c = recipes.recipe('mlp', int(a.get('seed', 0)), int(a.get('steps', 6000)))
  c.online = mc.ConfigDict(dict(
      students={f'student_{i}': dict(name=n, kwargs=recipes.MODELS[n])
                for i, n in enumerate(names)},
      temperature=float(a.get('temperature', 1.0)),
      mutual_weight=float(a.get('mutual_weight', 1.0))))
  return c
