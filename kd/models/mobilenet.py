"""MobileNetV2 of the CRD benchmark (RepDistiller `mobile_half`: expansion 6,
width 0.5, 32x32 inputs). Unlike torchvision's, every inverted residual has
its 1x1 expansion, also at expansion 1.

Feature taps: `stage0` (stem), `stage1`..`stage4` (after block groups 2, 3, 5
and 7, as the reference returns them), `embedding` (1x1 conv to 1280, ReLU,
global average pool).
"""
import flax.linen as nn
import jax.numpy as jnp

from kd.models.cifar_resnet import batch_norm, pooled_head

# (expansion, channels, blocks, stride); expansion None means the model's T.
SETTING = ((1, 16, 1, 1), (None, 24, 2, 1), (None, 32, 3, 2),
           (None, 64, 4, 2), (None, 96, 3, 1), (None, 160, 3, 2),
           (None, 320, 1, 1))
TAPPED_GROUPS = (1, 2, 4, 6)  # Groups whose outputs are stage1..stage4.


def conv_bn(x, features, kernel, stride, train, dtype, groups=1, relu=True):
  pad = kernel // 2
  x = nn.Conv(features, (kernel, kernel), (stride, stride),
              padding=((pad, pad), (pad, pad)), feature_group_count=groups,
              use_bias=False, dtype=dtype)(x)
  x = batch_norm(train, dtype)(x)
  return nn.relu(x) if relu else x


class InvertedResidual(nn.Module):
  features: int
  stride: int
  expansion: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    hidden = x.shape[-1] * self.expansion
    out = conv_bn(x, hidden, 1, 1, train, self.dtype)
    out = conv_bn(out, hidden, 3, self.stride, train, self.dtype, groups=hidden)
    out = conv_bn(out, self.features, 1, 1, train, self.dtype, relu=False)
    if self.stride == 1 and x.shape[-1] == self.features:
      return x + out
    return out


class MobileNetV2(nn.Module):
  num_classes: int
  expansion: int = 6
  width: float = 0.5
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = conv_bn(x.astype(self.dtype), int(32 * self.width), 3, 2, train,
                self.dtype)
    feats = {'stage0': x}
    for g, (t, c, n, s) in enumerate(SETTING):
      for i in range(n):
        x = InvertedResidual(int(c * self.width), s if i == 0 else 1,
                             t or self.expansion, self.dtype,
                             name=f'group{g}_{i}')(x, train)
      if g in TAPPED_GROUPS:
        feats[f'stage{TAPPED_GROUPS.index(g) + 1}'] = x
    last = int(1280 * self.width) if self.width > 1.0 else 1280
    x = conv_bn(x, last, 1, 1, train, self.dtype)
    return pooled_head(x, feats, self.num_classes, self.dtype)


class MobileNetV1(nn.Module):
  """MobileNet-V1 (Howard et al. 2017) for ImageNet, width 1: a stride-2
  stem and 13 depthwise-separable blocks (3x3 depthwise + 1x1, each with BN
  and ReLU). Taps: `stage0`..`stage4` (at each resolution's end),
  `embedding`."""
  num_classes: int
  dtype: jnp.dtype = jnp.float32
  blocks = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
            (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2),
            (1024, 1))

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = conv_bn(x.astype(self.dtype), 32, 3, 2, train, self.dtype)
    feats, stage = {}, 0
    for i, (c, s) in enumerate(self.blocks):
      if s == 2:
        feats[f'stage{stage}'], stage = x, stage + 1
      x = conv_bn(x, x.shape[-1], 3, s, train, self.dtype,
                  groups=x.shape[-1])
      x = conv_bn(x, c, 1, 1, train, self.dtype)
    feats[f'stage{stage}'] = x
    return pooled_head(x, feats, self.num_classes, self.dtype)
