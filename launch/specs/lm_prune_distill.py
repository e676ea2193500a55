"""Prune, then distil (issue #24): the 0.82M byte-level LM teacher (1,000
steps, shared by every run; lm_cache's recipe) compressed to about 0.2M
parameters by random init, strided-layer init, width, depth and width+depth
pruning, each then distilled with forward KL alone (300 steps of 32 x 128
tokens, tested every 50), and the width-pruned model trained with
cross-entropy alone; 3 seeds (configs/lm/prune_distill.py).

  python -m launch.sweep launch/specs/lm_prune_distill.py --workdir=runs
  python -m experiments.prune_distill.table runs/lm_prune_distill \
      --out=experiments/prune_distill
"""
NAME = 'lm_prune_distill'
CONFIG = 'configs/lm/prune_distill.py'
_SHARED = 'teacher_dir={root}/teacher,teacher_steps=1000,steps=300'
ARGS = [f'method={m},{_SHARED}'
        for m in ('random', 'strided', 'width', 'depth', 'both', 'width_ce')]
SEEDS = [0, 1, 2]
TAGS = ['lm', 'pystdlib', 'prune']
