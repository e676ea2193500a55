"""MNIST-1D (Greydanus 2020) baselines from labels, with the reference
training recipe: Adam, lr 1e-2, batch 100, 6,000 steps, no schedule.

  python -m kd.main --config=configs/mnist1d/train.py:model=cnn1d,seed=0 \
      --workdir=runs/mnist1d/cnn1d

Models: logreg, mlp (100-100, as the paper), cnn1d, gru (bidirectional,
6 units, as the paper).
"""
from kd.config import parse_args, run_config

MODELS = {'logreg': {}, 'mlp': {'hidden': (100, 100)}, 'cnn1d': {},
          'gru': {'hidden': 6}}


def recipe(model: str, seed: int = 0, steps: int = 6000):
  if model not in MODELS:
    raise ValueError(f'unknown MNIST-1D model {model!r}; valid: '
                     f'{sorted(MODELS)}')
  c = run_config()
  c.seed = seed
  c.data.name, c.data.augment = 'mnist1d', False
  c.model.name = model
  c.model.kwargs.update(MODELS[model])
  c.batch_size, c.eval_batch_size = 100, 500
  c.steps, c.eval_every, c.log_every = steps, 500, 500
  c.checkpoint_every = steps
  c.optimizer.update(name='adam', lr=1e-2, schedule='constant')
  c.wandb.project = 'kd-mnist1d'
  c.evaluate.latency = False
  return c


def get_config(arg: str | None = None):
  return recipe(**parse_args(arg, model='mlp', seed=0, steps=6000))
