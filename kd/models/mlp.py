"""Multi-layer perceptron on flattened inputs."""
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class MLP(nn.Module):
  num_classes: int
  hidden: Sequence[int] = (128, 128)
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # No batch norm or dropout.
    features = {}
    x = x.reshape((x.shape[0], -1)).astype(self.dtype)
    for i, width in enumerate(self.hidden):
      x = nn.relu(nn.Dense(width, dtype=self.dtype, name=f'dense{i}')(x))
      features[f'hidden{i}'] = x
    features['embedding'] = x
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x)
    return logits.astype(jnp.float32), features
