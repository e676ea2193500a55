"""Hinton-style table on MNIST-1D: one CNN teacher (shared by every run),
MLP students from labels, distilled at T in {1, 2, 4, 8, 20}, and zoo
methods; 5 seeds.

  python -m launch.sweep launch/specs/mnist1d_hinton.py --workdir=runs
  python -m kd.tables runs/mnist1d_hinton --group-by=model,method,temperature
"""
NAME = 'mnist1d_hinton'
CONFIG = 'configs/mnist1d/distill.py'
_T = 'teacher_dir={root}/teacher_cnn1d'
ARGS = ([f'method=scratch,{_T}'] +
        [f'method=kd,temperature={t},{_T}' for t in (1, 2, 4, 8, 20)] +
        [f'method={m},{_T}' for m in ('dkd', 'dist', 'rkd', 'logit_mse')])
SEEDS = [0, 1, 2, 3, 4]
TAGS = ['mnist1d', 'hinton']
