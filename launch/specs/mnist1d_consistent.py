"""Consistent teaching on MNIST-1D: the Hinton-style table again, with one
mixup (alpha 1) of every batch seen by teacher and student alike (Beyer et
al., CVPR 2022), and the student from labels with the same mixup. Shares the
CNN teacher of the mnist1d_hinton sweep; 5 seeds.

  python -m launch.sweep launch/specs/mnist1d_consistent.py --workdir=runs
  python -m kd.tables runs/mnist1d_consistent --group-by=model,method,mixup,temperature
"""
NAME = 'mnist1d_consistent'
CONFIG = 'configs/mnist1d/distill.py'
_T = 'teacher_dir={root}/../mnist1d_hinton/teacher_cnn1d'
ARGS = ([f'method=scratch,mixup=1.0,{_T}'] +
        [f'method=kd,temperature={t},mixup=1.0,{_T}' for t in (1, 2, 4, 8, 20)])
SEEDS = [0, 1, 2, 3, 4]
TAGS = ['mnist1d', 'consistent-teaching']
