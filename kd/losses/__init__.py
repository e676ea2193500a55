"""Distillation losses: small pure functions, each documented with its formula.

All return float32 scalars averaged over the batch and are differentiable in
their student arguments.
"""
from kd.losses.classification import cross_entropy
from kd.losses.logits import kd

__all__ = ['cross_entropy', 'kd']
