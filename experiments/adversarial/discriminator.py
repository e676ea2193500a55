"""The discriminator of adversarial distillation and its two game losses.

Each loss takes the discriminator's scores d (one real number per example,
a logit for 'non_saturating') on teacher outputs (label 1) and student
outputs (label 0).
"""
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

FORMS = ('non_saturating', 'least_squares')


class Discriminator(nn.Module):
  """MLP scoring whether its input came from the teacher: [B, D] -> [B]."""
  hidden: Sequence[int] = (64, 64)

  @nn.compact
  def __call__(self, x):
    for width in self.hidden:
      x = nn.leaky_relu(nn.Dense(width)(x), 0.2)
    return nn.Dense(1)(x)[:, 0]


def discriminator_loss(d_teacher, d_student, form: str):
  """non_saturating (Goodfellow et al. 2014):
      mean softplus(-d_t) + mean softplus(d_s)   (= BCE, teacher 1, student 0);
  least_squares (LSGAN, Mao et al. 2017):
      1/2 mean (d_t - 1)^2 + 1/2 mean d_s^2."""
  if form == 'non_saturating':
    return jnp.mean(jax.nn.softplus(-d_teacher)) + jnp.mean(
        jax.nn.softplus(d_student))
  if form == 'least_squares':
    return 0.5 * jnp.mean((d_teacher - 1) ** 2) + 0.5 * jnp.mean(d_student**2)
  raise ValueError(f'unknown adversarial loss form {form!r}; valid: {FORMS}')


def generator_loss(d_student, form: str):
  """The student's term, pushing its outputs to be scored as the teacher's:
  non_saturating mean softplus(-d_s) (= -mean log sigmoid(d_s));
  least_squares 1/2 mean (d_s - 1)^2."""
  if form == 'non_saturating':
    return jnp.mean(jax.nn.softplus(-d_student))
  if form == 'least_squares':
    return 0.5 * jnp.mean((d_student - 1) ** 2)
  raise ValueError(f'unknown adversarial loss form {form!r}; valid: {FORMS}')


def accuracy(d_teacher, d_student, form: str):
  """How often the discriminator is right, over teacher and student inputs
  alike; 0.5 means the game is balanced."""
  threshold = 0.0 if form == 'non_saturating' else 0.5
  return 0.5 * (jnp.mean((d_teacher > threshold).astype(jnp.float32))
                + jnp.mean((d_student <= threshold).astype(jnp.float32)))
