"""Hinton et al.'s omitted-class experiment on MNIST-1D, class 3, 3 seeds;
the CNN teacher of the mnist1d_hinton sweep.

  python -m launch.sweep launch/specs/mnist1d_omitted.py --workdir=runs
  python -m experiments.omitted_class.analyze runs/mnist1d_omitted/*
"""
NAME = 'mnist1d_omitted'
CONFIG = 'experiments/omitted_class/config.py'
ARGS = ['omit=3,teacher_dir={root}/../mnist1d_hinton/teacher_cnn1d']
SEEDS = [0, 1, 2]
TAGS = ['mnist1d', 'omitted-class']
