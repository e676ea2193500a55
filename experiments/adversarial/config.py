"""Adversarial distillation on MNIST-1D: an MLP student (100-100, reference
recipe) taught by a CNN teacher with CE + KD + lambda * adversarial term.

  python -m experiments.adversarial.train \
      --config=experiments/adversarial/config.py:form=non_saturating,seed=0,teacher_dir=runs/mnist1d_baselines/model=cnn1d__seed=1 \
      --workdir=runs/adversarial/ns_s0

Arguments: `seed`, `steps`, `teacher_dir` (a finished `kd.main` run),
`form` (non_saturating | least_squares), `adv_weight` (lambda, default
0.1), `kd_weight` (default 1; 0 leaves only CE + adversarial),
`temperature` (of KD and of the discriminator's input, default 4),
`disc_steps` (discriminator updates per student update, default 1),
`embedding` (1: the discriminator also sees the pooled embedding),
`conditional` (1: and the one-hot label), `raw_logits` (1: D sees logits
instead of softmax(logits / T)), `disc_lr` (default 1e-3).
"""
import ml_collections as mc

from configs.mnist1d import train as recipes
from experiments.adversarial import discriminator

TEACHER = 'runs/mnist1d_baselines/model=cnn1d__seed=1'


def get_config(arg: str | None = None):
  a = recipes.parse(arg)
  c = recipes.recipe('mlp', int(a.get('seed', 0)), int(a.get('steps', 6000)))
  form = a.get('form', 'non_saturating')
  if form not in discriminator.FORMS:
    raise ValueError(f'unknown form {form!r}; valid: {discriminator.FORMS}')
  c.adversarial = mc.ConfigDict(dict(
      teacher_dir=a.get('teacher_dir', TEACHER), form=form,
      adv_weight=float(a.get('adv_weight', 0.1)),
      kd_weight=float(a.get('kd_weight', 1.0)), ce_weight=1.0,
      temperature=float(a.get('temperature', 4.0)),
      disc_steps=int(a.get('disc_steps', 1)),
      embedding=bool(int(a.get('embedding', 0))),
      conditional=bool(int(a.get('conditional', 0))),
      raw_logits=bool(int(a.get('raw_logits', 0))),
      disc_hidden=(64, 64), disc_lr=float(a.get('disc_lr', 1e-3))))
  return c
