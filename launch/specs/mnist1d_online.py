"""Deep mutual learning on MNIST-1D (experiments/online): two MLPs, and an
MLP beside a CNN, trained together from scratch; 3 seeds.

  python -m launch.sweep launch/specs/mnist1d_online.py --workdir=runs
  python -m kd.tables runs/mnist1d_online --group-by=students \
      --metric=student_0/test_accuracy,student_1/test_accuracy,ensemble/test_accuracy
"""
NAME = 'mnist1d_online'
CONFIG = 'experiments/online/config.py'
PROGRAM = 'experiments.online.train'
ARGS = ['students=mlp+mlp', 'students=mlp+cnn1d']
SEEDS = [0, 1, 2]
TAGS = ['mnist1d', 'online']
