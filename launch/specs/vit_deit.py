"""DeiT at toy scale on MNIST-1D (configs/vit/distill.py): one CNN teacher
shared by every run; a ViT from labels, with soft KD on its logits, and with
a distillation token trained by hard or soft distillation; 3 seeds.

  python -m launch.sweep launch/specs/vit_deit.py --workdir=runs
  python -m kd.tables runs/vit_deit --group-by=model,method
"""
NAME = 'vit_deit'
CONFIG = 'configs/vit/distill.py'
_T = 'teacher_dir={root}/teacher_cnn1d'
ARGS = [f'method={m},{_T}' for m in ('scratch', 'kd', 'deit_hard', 'deit_soft')]
SEEDS = [0, 1, 2]
TAGS = ['mnist1d', 'vit', 'deit']
