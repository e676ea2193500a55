"""Born-Again Networks on MNIST-1D (experiments/born_again): each variant's
pipeline of four MLP generations; 3 seeds.

  python -m launch.sweep launch/specs/mnist1d_born_again.py --workdir=runs
  python -m kd.tables runs/mnist1d_born_again --group-by=variant,stage \
      --stage=gen0,gen1,gen2,gen3 --metric=test_accuracy
  python -m experiments.born_again.score runs/mnist1d_born_again/variant=*
"""
NAME = 'mnist1d_born_again'
CONFIG = 'experiments/born_again/config.py'
ARGS = ['variant=ban', 'variant=ban_l', 'variant=cwtm', 'variant=dkpp']
SEEDS = [0, 1, 2]
TAGS = ['mnist1d', 'born_again']
