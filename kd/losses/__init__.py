"""Distillation losses: small pure functions, each documented with its formula.

All return float32 scalars averaged over the batch and are differentiable in
their student arguments.
"""
from kd.losses.classification import cross_entropy
from kd.losses.contrastive import crd
from kd.losses.features import (attention_transfer, factor_transfer, hint,
                                match_spatial, nst, vid)
from kd.losses.logits import dist, dkd, kd, logit_mse
from kd.losses.relations import (correlation_congruence, pkt, rkd,
                                 similarity_preserving)

LOSSES = {f.__name__: f for f in (
    kd, dkd, dist, logit_mse, hint, attention_transfer, similarity_preserving,
    rkd, pkt, correlation_congruence, nst, factor_transfer, vid, crd)}


def get(name: str):
  if name not in LOSSES:
    raise ValueError(f'unknown loss {name!r}; valid losses: '
                     f'{", ".join(sorted(LOSSES))}')
  return LOSSES[name]


def check_inputs(name: str, student_shape, teacher_shape) -> None:
  del name, student_shape, teacher_shape
