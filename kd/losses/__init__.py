"""Distillation losses: small pure functions, each documented with its formula.

All return float32 scalars averaged over the batch and are differentiable in
their student arguments.
"""
from kd.losses.classification import cross_entropy
from kd.losses.logits import kd

__all__ = ['cross_entropy', 'kd']

LOSSES = {'kd': kd}


def get(name: str):
  if name not in LOSSES:
    raise ValueError(f'unknown loss {name!r}; valid losses: '
                     f'{", ".join(sorted(LOSSES))}')
  return LOSSES[name]


def check_inputs(name: str, student_shape, teacher_shape) -> None:
  del name, student_shape, teacher_shape
