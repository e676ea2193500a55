"""Model registry.

Every model is a `flax.linen.Module` whose `__call__(x, train: bool)` returns
`(logits, features)`, where `features` is a dict of named intermediate tensors
(NHWC for 2-D maps, NWC for 1-D maps) that always includes `'embedding'`, the
pre-logit vector.
"""
import functools
from typing import Callable

import flax.linen as nn

from kd.models import cnn, gru, mlp

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    'mlp': mlp.MLP,
    'logreg': functools.partial(mlp.MLP, hidden=()),
    'gru': gru.GRU,
    'cnn': cnn.CNN,
    'cnn1d': cnn.CNN1D,
}


def register(name: str, factory: Callable[..., nn.Module]) -> None:
  if name in _REGISTRY:
    raise ValueError(f'model {name!r} is already registered')
  _REGISTRY[name] = factory


def names() -> list[str]:
  return sorted(_REGISTRY)


def create(name: str, num_classes: int, **kwargs) -> nn.Module:
  """Returns the model `name` with a `num_classes`-way classifier head."""
  if name not in _REGISTRY:
    raise ValueError(
        f'unknown model {name!r}; valid names: {", ".join(names())}')
  return _REGISTRY[name](num_classes=num_classes, **kwargs)
