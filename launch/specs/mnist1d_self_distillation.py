"""Self-distillation on MNIST-1D (experiments/self_distillation): BYOT and
teacher-free (alpha 0.5 and 0.1) on the MLP; 3 seeds.

  python -m launch.sweep launch/specs/mnist1d_self_distillation.py --workdir=runs
  python -m kd.tables runs/mnist1d_self_distillation --group-by=mode,alpha \
      --metric=final/test_accuracy,aux_hidden0/test_accuracy,ensemble/test_accuracy
"""
NAME = 'mnist1d_self_distillation'
CONFIG = 'experiments/self_distillation/config.py'
PROGRAM = 'experiments.self_distillation.train'
ARGS = ['mode=byot', 'mode=teacher_free', 'mode=teacher_free,alpha=0.1']
SEEDS = [0, 1, 2]
TAGS = ['mnist1d', 'self_distillation']
