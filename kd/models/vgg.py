"""VGGs of the CRD benchmark (RepDistiller `vgg.py`, with batch norm):
vgg8, vgg11, vgg13, vgg16, vgg19. Five blocks of 3x3 conv (with bias)-BN-ReLU,
2x max-pooling between blocks, global average pool, one linear layer.

Feature taps: `stage0`..`stage4` (each block's output after ReLU),
`preact_stage1`..`preact_stage4` (before that ReLU), `embedding`.
"""
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from kd.models.cifar_resnet import batch_norm, conv, pooled_head

CFGS = {
    'vgg8': ((64,), (128,), (256,), (512,), (512,)),
    'vgg11': ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    'vgg13': ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    'vgg16': ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512),
              (512, 512, 512)),
    'vgg19': ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}


class VGG(nn.Module):
  num_classes: int
  cfg: Sequence[Sequence[int]] = CFGS['vgg8']
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.astype(self.dtype)
    feats = {}
    for b, block in enumerate(self.cfg):
      if b > 0 and (b < 4 or x.shape[1] > 4):  # The reference skips pool3 at 32x32.
        x = nn.max_pool(x, (2, 2), (2, 2))
      for j, width in enumerate(block):
        x = batch_norm(train, self.dtype)(
            conv(width, 3, 1, self.dtype, bias=True, name=f'conv{b}_{j}')(x))
        if j < len(block) - 1:
          x = nn.relu(x)
      if b > 0:
        feats[f'preact_stage{b}'] = x
      x = nn.relu(x)
      feats[f'stage{b}'] = x
    return pooled_head(x, feats, self.num_classes, self.dtype)
