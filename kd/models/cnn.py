"""Small convolutional nets: 2-D for images (NHWC), 1-D for signals (NWC)."""
import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class ConvNet(nn.Module):
  """Conv-ReLU stages, each but the last followed by 2x max-pooling, then
  flattening (small inputs: where a digit's strokes are matters), a dense
  layer and the classifier head.

  The kernel's length sets the dimensionality: `(3, 3)` for images,
  `(5,)` for 1-D signals given as `[batch, length]` or `[batch, length, c]`.
  Features: `stage{i}` and `preact_stage{i}` (before its ReLU), `embedding`.
  """
  num_classes: int
  channels: Sequence[int] = (32, 64)
  kernel: Sequence[int] = (3, 3)
  dense: int = 128
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # No batch norm or dropout.
    one_d = len(self.kernel) == 1
    if x.ndim == len(self.kernel) + 1:
      x = x[..., None]
    # 1-D signals run as 1 x L images: TFLite has 2-D pooling kernels only.
    kernel = (1, *self.kernel) if one_d else tuple(self.kernel)
    window = (1, 2) if one_d else (2, 2)
    x = (x[:, None] if one_d else x).astype(self.dtype)
    features = {}
    for i, c in enumerate(self.channels):
      pre = nn.Conv(c, kernel, dtype=self.dtype, name=f'conv{i}')(x)
      x = nn.relu(pre)
      features[f'preact_stage{i}'] = pre[:, 0] if one_d else pre
      features[f'stage{i}'] = x[:, 0] if one_d else x
      if i < len(self.channels) - 1:
        x = nn.max_pool(x, window, strides=window, padding='SAME')
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(self.dense, dtype=self.dtype, name='dense')(x))
    features['embedding'] = x
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x)
    return logits.astype(jnp.float32), features


CNN = functools.partial(ConvNet, kernel=(3, 3))
CNN1D = functools.partial(ConvNet, kernel=(5,), channels=(32, 32, 32))
