"""ImageNet ResNets (He et al. 2016), torchvision-exact in parameters:
resnet18_imagenet, resnet34_imagenet, resnet50_imagenet (stride on the 3x3
convolution of bottlenecks, 'v1.5').

Feature taps: `stage0` (stem, after max-pooling), `stage1`..`stage4` (after
each stage's last ReLU), `preact_stage1`..`preact_stage4`, `embedding`.
"""
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from kd.models.cifar_resnet import (BasicBlock, batch_norm, conv,
                                     pooled_head, residual_stages)


class Bottleneck(nn.Module):
  planes: int
  stride: int
  dtype: jnp.dtype = jnp.float32
  expansion: int = 4

  @nn.compact
  def __call__(self, x, train: bool):
    out = nn.relu(batch_norm(train, self.dtype)(conv(self.planes, 1, 1, self.dtype)(x)))
    out = nn.relu(batch_norm(train, self.dtype)(
        conv(self.planes, 3, self.stride, self.dtype)(out)))
    out = batch_norm(train, self.dtype)(
        conv(self.planes * self.expansion, 1, 1, self.dtype)(out))
    if self.stride != 1 or x.shape[-1] != self.planes * self.expansion:
      x = batch_norm(train, self.dtype)(
          conv(self.planes * self.expansion, 1, self.stride, self.dtype)(x))
    preact = out + x
    return nn.relu(preact), preact


class ImageNetResNet(nn.Module):
  num_classes: int
  blocks: Sequence[int] = (2, 2, 2, 2)
  bottleneck: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.astype(self.dtype)
    x = nn.Conv(64, (7, 7), (2, 2), padding=((3, 3), (3, 3)), use_bias=False,
                dtype=self.dtype)(x)
    x = nn.relu(batch_norm(train, self.dtype)(x))
    x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    feats = {'stage0': x}
    x = residual_stages(x, Bottleneck if self.bottleneck else BasicBlock,
                        (64, 128, 256, 512), self.blocks, train, self.dtype,
                        feats)
    return pooled_head(x, feats, self.num_classes, self.dtype)


class CifarResNet50(nn.Module):
  """RepDistiller's `ResNet50` (`resnetv2.py`) for 32x32 inputs: bottleneck
  stages 3-4-6-3 as ImageNet's, a 3x3 stride-1 stem and no max-pooling."""
  num_classes: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu(batch_norm(train, self.dtype)(conv(64, 3, 1, self.dtype)(
        x.astype(self.dtype))))
    feats = {'stage0': x}
    x = residual_stages(x, Bottleneck, (64, 128, 256, 512), (3, 4, 6, 3),
                        train, self.dtype, feats)
    return pooled_head(x, feats, self.num_classes, self.dtype)
