"""ShuffleNets of the CRD benchmark. V2 (RepDistiller `ShuffleV2`, net size 1):
widths 116-232-464, 1024-d head, blocks 3-7-3, a 1x1 stem for 32x32 inputs;
V1 below.

Feature taps: `stage0` (stem), `stage1`..`stage3` (stage outputs, after the
channel shuffle), `preact_stage1`..`preact_stage3` (the last block's
concatenation before its ReLU and shuffle), `embedding`.
"""
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from kd.models.mobilenet import conv_bn
from kd.models.cifar_resnet import pooled_head


def shuffle(x, groups: int = 2):
  """Channel shuffle, NHWC: [.., g, C/g] -> [.., C/g, g]."""
  n, h, w, c = x.shape
  return x.reshape(n, h, w, groups, c // groups).swapaxes(3, 4).reshape(
      n, h, w, c)


class ShuffleBlock(nn.Module):
  """Keeps half the channels, transforms the other half; returns
  (shuffled output, pre-activation concatenation)."""
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    c = x2.shape[-1]
    out = conv_bn(x2, c, 1, 1, train, self.dtype)
    out = conv_bn(out, c, 3, 1, train, self.dtype, groups=c, relu=False)
    pre = conv_bn(out, c, 1, 1, train, self.dtype, relu=False)
    return (shuffle(jnp.concatenate([x1, nn.relu(pre)], -1)),
            jnp.concatenate([x1, pre], -1))


class DownBlock(nn.Module):
  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    c, mid = x.shape[-1], self.features // 2
    left = conv_bn(x, c, 3, 2, train, self.dtype, groups=c, relu=False)
    left = conv_bn(left, mid, 1, 1, train, self.dtype)
    right = conv_bn(x, mid, 1, 1, train, self.dtype)
    right = conv_bn(right, mid, 3, 2, train, self.dtype, groups=mid,
                    relu=False)
    right = conv_bn(right, mid, 1, 1, train, self.dtype)
    return shuffle(jnp.concatenate([left, right], -1))


class ShuffleNetV2(nn.Module):
  num_classes: int
  widths: Sequence[int] = (116, 232, 464, 1024)
  blocks: Sequence[int] = (3, 7, 3)
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = conv_bn(x.astype(self.dtype), 24, 1, 1, train, self.dtype)
    feats = {'stage0': x}
    for s, (width, n) in enumerate(zip(self.widths, self.blocks), start=1):
      x = DownBlock(width, self.dtype, name=f'down{s}')(x, train)
      for i in range(n):
        x, pre = ShuffleBlock(self.dtype, name=f'block{s}_{i}')(x, train)
      feats[f'stage{s}'], feats[f'preact_stage{s}'] = x, pre
    x = conv_bn(x, self.widths[-1], 1, 1, train, self.dtype)
    return pooled_head(x, feats, self.num_classes, self.dtype)


class ShuffleV1Block(nn.Module):
  """ShuffleNet unit: grouped 1x1, shuffle, 3x3 depthwise, grouped 1x1; a
  stride-2 unit concatenates a 3x3 average-pooled shortcut instead of adding
  it. Returns (output, pre-activation)."""
  features: int
  stride: int
  groups: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    mid = self.features // 4
    first_groups = 1 if x.shape[-1] == 24 else self.groups  # After the stem.
    out = conv_bn(x, mid, 1, 1, train, self.dtype, groups=first_groups)
    out = shuffle(out, first_groups)
    out = conv_bn(out, mid, 3, self.stride, train, self.dtype, groups=mid)
    out = conv_bn(out, self.features, 1, 1, train, self.dtype,
                  groups=self.groups, relu=False)
    if self.stride == 2:
      res = nn.avg_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
      pre = jnp.concatenate([out, res], -1)
    else:
      pre = out + x
    return nn.relu(pre), pre


class ShuffleNetV1(nn.Module):
  """RepDistiller's `ShuffleV1`: groups 3, widths 240-480-960, blocks
  4-8-4, a 1x1 stem. Taps as ShuffleNetV2's (no 1x1 head conv: the
  embedding pools the last stage)."""
  num_classes: int
  widths: Sequence[int] = (240, 480, 960)
  blocks: Sequence[int] = (4, 8, 4)
  groups: int = 3
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = conv_bn(x.astype(self.dtype), 24, 1, 1, train, self.dtype)
    feats = {'stage0': x}
    for s, (width, n) in enumerate(zip(self.widths, self.blocks), start=1):
      for i in range(n):
        # The first unit of a stage concatenates its input: it adds the rest.
        out = width - x.shape[-1] if i == 0 else width
        x, pre = ShuffleV1Block(out, 2 if i == 0 else 1, self.groups,
                                self.dtype, name=f'block{s}_{i}')(x, train)
      feats[f'stage{s}'], feats[f'preact_stage{s}'] = x, pre
    return pooled_head(x, feats, self.num_classes, self.dtype)
