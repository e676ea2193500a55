"""Adversarial distillation on MNIST-1D: an MLP student (100-100, reference
recipe) taught by a CNN teacher with CE + KD + lambda * adversarial term.

  python -m experiments.adversarial.train \
      --config=experiments/adversarial/config.py:form=non_saturating,seed=0,teacher_dir=runs/mnist1d_baselines/model=cnn1d__seed=1 \
      --workdir=runs/adversarial/ns_s0

Arguments: `seed`, `steps`, `teacher_dir` (a finished `kd.main` run),
`form` (non_saturating | least_squares), `adv_weight` (lambda, default
0.1), `kd_weight` (the weight of the KD term `distill.terms.kd`, default 1;
0 leaves only CE + adversarial), `temperature` (of KD and of the
discriminator's input, default 4),
`disc_steps` (discriminator updates per student update, default 1),
`embedding` (1: the discriminator also sees the pooled embedding),
`conditional` (1: and the one-hot label), `raw_logits` (1: D sees logits
instead of softmax(logits / T)), `disc_lr` (default 1e-3).
"""
import ml_collections as mc

from configs.mnist1d import train as recipes
from experiments.adversarial import discriminator
from kd.config import parse_args, term

TEACHER = 'runs/mnist1d_baselines/model=cnn1d__seed=1'


def get_config(arg: str | None = None):
  a = parse_args(arg, seed=0, steps=6000, form='non_saturating',
                 teacher_dir=TEACHER, adv_weight=0.1, kd_weight=1.0,
                 temperature=4.0, disc_steps=1, embedding=False,
                 conditional=False, raw_logits=False, disc_lr=1e-3)
  c = recipes.recipe('mlp', a['seed'], a['steps'])
  form = a['form']
  if form not in discriminator.FORMS:
    raise ValueError(f'unknown form {form!r}; valid: {discriminator.FORMS}')
  c.distill.terms.kd = term('kd', a['kd_weight'],
                            temperature=a['temperature'])
  c.adversarial = mc.ConfigDict(dict(
      teacher_dir=a['teacher_dir'], form=form, adv_weight=a['adv_weight'],
      ce_weight=1.0, temperature=a['temperature'],
      disc_steps=a['disc_steps'], embedding=a['embedding'],
      conditional=a['conditional'], raw_logits=a['raw_logits'],
      disc_hidden=(64, 64), disc_lr=a['disc_lr']))
  return c
