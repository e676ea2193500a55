"""Prune, then distil a ViT on MNIST-1D (issue #24): a ViT teacher (patch
4, width 64, depth 4, 4 heads; 4,000 steps, shared by every run) pruned
to half its heads, embedding channels and MLP neurons (about a quarter of
its parameters) by activation importance, then distilled (KL at T = 4
alone); random init + KD and the pruned ViT trained on labels alone beside
it. Students train 2,000 steps (200k examples), tested every 250; 3 seeds
(configs/vit/prune_distill.py).

  python -m launch.sweep launch/specs/vit_prune_distill.py --workdir=runs
  python -m experiments.prune_distill.mnist1d runs/vit_prune_distill \\
      --out=experiments/prune_distill
"""
NAME = 'vit_prune_distill'
CONFIG = 'configs/vit/prune_distill.py'
_T = 'teacher_dir={root}/teacher_vit,teacher_steps=4000,steps=2000'
ARGS = [f'method={m},{_T}' for m in ('random', 'width', 'width_ce')]
SEEDS = [0, 1, 2]
TAGS = ['mnist1d', 'vit', 'prune']
