"""Adversarial distillation on MNIST-1D (experiments/adversarial): an MLP
student from the best baseline CNN (cnn1d seed 1 of
launch/specs/mnist1d_baselines.py, trained first) with each game form and
discriminator input, and without the KD term; 3 seeds.

  python -m launch.sweep launch/specs/mnist1d_baselines.py --workdir=runs
  python -m launch.sweep launch/specs/mnist1d_adversarial.py --workdir=runs
  python -m kd.tables runs/mnist1d_adversarial \
      --group-by=form,embedding,conditional,kd_weight,raw_logits \
      --metric=student/test_accuracy,teacher/test_accuracy
"""
NAME = 'mnist1d_adversarial'
CONFIG = 'experiments/adversarial/config.py'
PROGRAM = 'experiments.adversarial.train'
_T = 'teacher_dir={root}/../mnist1d_baselines/model=cnn1d__seed=1'
ARGS = [f'form=non_saturating,{_T}', f'form=least_squares,{_T}',
        f'form=non_saturating,embedding=1,conditional=1,{_T}',
        f'form=non_saturating,kd_weight=0,{_T}',
        f'form=non_saturating,raw_logits=1,{_T}']
SEEDS = [0, 1, 2]
TAGS = ['mnist1d', 'adversarial']
