"""Model registry.

Every model is a `flax.linen.Module` whose `__call__(x, train: bool)` returns
`(logits, features)`, where `features` is a dict of named intermediate tensors
(NHWC for 2-D maps, NWC for 1-D maps) that always includes `'embedding'`, the
pre-logit vector. For 'transformer_lm' `num_classes` is the vocabulary
size and `x` a [batch, length] int32 token array (see `kd.models.lm`); for
'transformer_encoder' too (the masked-LM head's classes), with `num_labels`
for its [CLS] classification head; with `head='cls'` `num_classes` is the
labels and `vocab_size` a kwarg (see `kd.models.encoder.create`).
A user's own module, named `module:package.path:ClassName`, is wrapped into
this convention (`kd.models.flax_module`).
"""
import functools
from typing import Callable

import flax.linen as nn
import jax.numpy as jnp

from kd.models import (cifar_resnet, cnn, encoder, flax_module, gru,
                       imagenet_resnet, lm, mlp, mobilenet, shufflenet, vgg,
                       vit, wrn)

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    'mlp': mlp.MLP,
    'logreg': functools.partial(mlp.MLP, hidden=()),
    'gru': gru.GRU,
    'cnn': cnn.CNN,
    'cnn1d': cnn.CNN1D,
}
# The CIFAR zoo of the CRD benchmark.
for _depth in (8, 14, 20, 32, 44, 56, 110):
  _REGISTRY[f'resnet{_depth}'] = functools.partial(cifar_resnet.CifarResNet,
                                                   depth=_depth)
for _depth in (8, 32):
  _REGISTRY[f'resnet{_depth}x4'] = functools.partial(
      cifar_resnet.CifarResNet, depth=_depth, widths=(32, 64, 128, 256))
for _depth, _widen in ((16, 1), (16, 2), (40, 1), (40, 2)):
  _REGISTRY[f'wrn_{_depth}_{_widen}'] = functools.partial(
      wrn.WideResNet, depth=_depth, widen=_widen)
for _name, _cfg in vgg.CFGS.items():
  _REGISTRY[_name] = functools.partial(vgg.VGG, cfg=_cfg)
_REGISTRY['MobileNetV2'] = mobilenet.MobileNetV2
_REGISTRY['ShuffleV1'] = shufflenet.ShuffleNetV1
_REGISTRY['ShuffleV2'] = shufflenet.ShuffleNetV2
_REGISTRY['ResNet50'] = imagenet_resnet.CifarResNet50
# ImageNet.
_REGISTRY['mobilenet_v1_imagenet'] = mobilenet.MobileNetV1
for _name, _blocks, _bottleneck in (('resnet18', (2, 2, 2, 2), False),
                                    ('resnet34', (3, 4, 6, 3), False),
                                    ('resnet50', (3, 4, 6, 3), True)):
  _REGISTRY[f'{_name}_imagenet'] = functools.partial(
      imagenet_resnet.ImageNetResNet, blocks=_blocks, bottleneck=_bottleneck)
# Language models: the classes are the vocabulary.
_REGISTRY['transformer_lm'] = (
    lambda num_classes, **kw: lm.TransformerLM(vocab_size=num_classes, **kw))
_REGISTRY['transformer_encoder'] = encoder.create
# ViT / DeiT with 16x16 patches (timm's sizes); kwargs such as patch_size,
# depth, width, heads shrink them for small inputs.
for _size, (_width, _depth, _heads) in vit.SIZES.items():
  for _name, _distilled in ((f'vit_{_size}', False), (f'deit_{_size}', False),
                            (f'deit_{_size}_distilled', True)):
    _REGISTRY[_name] = functools.partial(
        vit.VisionTransformer, width=_width, depth=_depth, heads=_heads,
        distilled=_distilled)


DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}  # kd.names.DTYPES


def register(name: str, factory: Callable[..., nn.Module]) -> None:
  if name in _REGISTRY:
    raise ValueError(f'model {name!r} is already registered')
  _REGISTRY[name] = factory


def names() -> list[str]:
  return sorted(_REGISTRY)


def create(name: str, num_classes: int, **kwargs) -> nn.Module:
  """Returns the model `name` with a `num_classes`-way classifier head."""
  if name.startswith(flax_module.PREFIX):
    return flax_module.create(name, num_classes, **kwargs)
  if name not in _REGISTRY:
    raise ValueError(
        f'unknown model {name!r}; valid names: {", ".join(names())}, or a '
        f'module of your own as "{flax_module.PREFIX}package.path:ClassName"')
  return _REGISTRY[name](num_classes=num_classes, **kwargs)


def from_config(name: str, kwargs, num_classes: int,
                dtype: str | None = None) -> nn.Module:
  """The model a config entry names (`config.model.name` and `.kwargs`, or a
  teacher's `model` and `kwargs`), computing in `dtype` (a key of `DTYPES`;
  None: the model's default)."""
  kwargs = kwargs.to_dict() if hasattr(kwargs, 'to_dict') else dict(
      kwargs or {})
  if dtype is not None:
    if dtype not in DTYPES:
      raise ValueError(f'unknown dtype {dtype!r}; valid: {tuple(DTYPES)}')
    kwargs['dtype'] = DTYPES[dtype]
  return create(name, num_classes, **kwargs)
