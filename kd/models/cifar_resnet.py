"""CIFAR ResNets of the CRD benchmark (RepDistiller `resnet.py`), parameter
for parameter: resnet8/14/20/32/44/56/110 (widths 16-16-32-64) and
resnet8x4/32x4 (32-64-128-256).

Feature taps: `stage0` (stem output, after ReLU), `stage1`..`stage3` (each
stage's output after its last ReLU), `preact_stage1`..`preact_stage3` (the
same before that ReLU, for methods that need pre-activations) and
`embedding` (global average pool).
"""
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


def batch_norm(train: bool, dtype, name=None):
  # PyTorch's BN momentum 0.1 is flax's 0.9.
  return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                      epsilon=1e-5, dtype=dtype, name=name)


def conv(features, kernel, stride=1, dtype=jnp.float32, name=None, bias=False):
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), (stride, stride),
                 padding=((pad, pad), (pad, pad)), use_bias=bias, dtype=dtype,
                 name=name)


def pooled_head(x, feats, num_classes: int, dtype):
  """Global average pool into `feats['embedding']`, then the linear
  classifier `fc`; returns the model's (float32 logits, feats)."""
  feats['embedding'] = jnp.mean(x, axis=(1, 2))
  logits = nn.Dense(num_classes, dtype=dtype, name='fc')(feats['embedding'])
  return logits.astype(jnp.float32), feats


class BasicBlock(nn.Module):
  """conv-BN-ReLU-conv-BN plus shortcut (1x1 conv + BN when the shape
  changes); returns (output after ReLU, output before it)."""
  planes: int
  stride: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    out = nn.relu(batch_norm(train, self.dtype)(
        conv(self.planes, 3, self.stride, self.dtype)(x)))
    out = batch_norm(train, self.dtype)(conv(self.planes, 3, 1, self.dtype)(out))
    if self.stride != 1 or x.shape[-1] != self.planes:
      x = batch_norm(train, self.dtype)(
          conv(self.planes, 1, self.stride, self.dtype)(x))
    preact = out + x
    return nn.relu(preact), preact


def residual_stages(x, block, widths, depths, train: bool, dtype, feats):
  """Stages of residual blocks (the first of each stage but the first
  downsamples); records `stage{k}` and `preact_stage{k}` in `feats`. Called
  from a parent's compact method, whose submodules the blocks become."""
  for stage, (n, width) in enumerate(zip(depths, widths), start=1):
    for i in range(n):
      stride = 2 if stage > 1 and i == 0 else 1
      x, pre = block(width, stride, dtype, name=f'layer{stage}_{i}')(x, train)
    feats[f'stage{stage}'], feats[f'preact_stage{stage}'] = x, pre
  return x


class CifarResNet(nn.Module):
  num_classes: int
  depth: int = 20
  widths: Sequence[int] = (16, 16, 32, 64)
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    n = (self.depth - 2) // 6
    x = x.astype(self.dtype)
    x = nn.relu(batch_norm(train, self.dtype)(
        conv(self.widths[0], 3, 1, self.dtype)(x)))
    feats = {'stage0': x}
    x = residual_stages(x, BasicBlock, self.widths[1:], (n,) * 3, train,
                        self.dtype, feats)
    return pooled_head(x, feats, self.num_classes, self.dtype)
