"""Wide ResNets of the CRD benchmark (RepDistiller `wrn.py`): wrn_16_1,
wrn_16_2, wrn_40_1, wrn_40_2 (pre-activation blocks, widths 16, 16k, 32k,
64k).

Feature taps: `stage0` (stem conv), `stage1`..`stage3` (block-group outputs,
before the next BN-ReLU, as the reference returns them), `embedding` (after
the final BN-ReLU and global average pool).
"""
import flax.linen as nn
import jax.numpy as jnp

from kd.models.cifar_resnet import batch_norm, conv, pooled_head


class PreActBlock(nn.Module):
  planes: int
  stride: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    act = nn.relu(batch_norm(train, self.dtype)(x))
    out = conv(self.planes, 3, self.stride, self.dtype)(act)
    out = nn.relu(batch_norm(train, self.dtype)(out))
    out = conv(self.planes, 3, 1, self.dtype)(out)
    if x.shape[-1] == self.planes:
      return x + out
    # The shortcut sees the activated input when the width changes.
    return conv(self.planes, 1, self.stride, self.dtype)(act) + out


class WideResNet(nn.Module):
  num_classes: int
  depth: int = 16
  widen: int = 2
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    n = (self.depth - 4) // 6
    widths = (16 * self.widen, 32 * self.widen, 64 * self.widen)
    x = conv(16, 3, 1, self.dtype)(x.astype(self.dtype))
    feats = {'stage0': x}
    for stage, width in enumerate(widths, start=1):
      for i in range(n):
        stride = 2 if stage > 1 and i == 0 else 1
        x = PreActBlock(width, stride, self.dtype,
                        name=f'block{stage}_{i}')(x, train)
      feats[f'stage{stage}'] = x
    x = nn.relu(batch_norm(train, self.dtype)(x))
    return pooled_head(x, feats, self.num_classes, self.dtype)
