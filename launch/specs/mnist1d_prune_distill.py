"""Prune, then distil on MNIST-1D (issue #24): the reference cnn1d teacher
(shared by every run) pruned to half its conv channels and dense units
(about a quarter of its parameters) by activation importance or filter L1
norm, each then distilled (KL at T = 4 alone); random init + KD and the
activation-pruned net trained on labels alone beside them. The teacher
trains the reference 6,000 steps, the students 2,000 (200k examples, 50
epochs; tested every 250 steps) to fit 2 CPU cores; 3 seeds
(configs/mnist1d/prune_distill.py).

  python -m launch.sweep launch/specs/mnist1d_prune_distill.py --workdir=runs
  python -m experiments.prune_distill.mnist1d runs/mnist1d_prune_distill --out=experiments/prune_distill
"""
NAME = 'mnist1d_prune_distill'
CONFIG = 'configs/mnist1d/prune_distill.py'
_T = 'teacher_dir={root}/teacher_cnn1d,teacher_steps=6000,steps=2000'
ARGS = [f'method={m},{_T}' for m in ('random', 'width', 'width_l1',
                                     'width_ce')]
SEEDS = [0, 1, 2]
TAGS = ['mnist1d', 'prune']
