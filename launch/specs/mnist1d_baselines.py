"""MNIST-1D baselines of the paper (logistic regression, MLP, CNN, GRU) over
5 seeds.

  python -m launch.sweep launch/specs/mnist1d_baselines.py --workdir=runs
  python -m kd.tables runs/mnist1d_baselines --group-by=model \
      --paper=experiments/paper_tables/mnist1d.py
"""
NAME = 'mnist1d_baselines'
CONFIG = 'configs/mnist1d/train.py'
ARGS = ['model=logreg', 'model=mlp', 'model=cnn1d', 'model=gru']
SEEDS = [0, 1, 2, 3, 4]
TAGS = ['mnist1d', 'baseline']
