"""Vision transformer (Dosovitskiy et al., ICLR 2021) and DeiT (Touvron et
al., ICML 2021), layer for layer timm's `VisionTransformer`.

Non-overlapping patches (a strided convolution with bias) become tokens; a
class token (and with `distilled=True` DeiT's distillation token) is
prepended and learned position embeddings added; pre-norm blocks
x += MHSA(LN(x)); x += MLP(LN(x)) follow; a final LayerNorm; a linear head on
the class token (and `head_dist` on the distillation token). 1-D inputs
[B, L, C] (MNIST-1D) are cut into patches along L. The number of position
embeddings comes from the input shape at init.

Attention is plain einsum + softmax, so the model exports with builtin TFLite
ops only.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

# (width, depth, heads) of timm's / DeiT's sizes, all with 16x16 patches.
SIZES = {'tiny': (192, 12, 3), 'small': (384, 12, 6), 'base': (768, 12, 12)}
_dense_init = nn.initializers.truncated_normal(0.02)


class Attention(nn.Module):
  """Multi-head self-attention: softmax(q k^T / sqrt(d)) v per head, with a
  bias on the joint qkv projection and an output projection `proj`."""
  heads: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, n, width = x.shape
    if width % self.heads:
      raise ValueError(f'width {width} is not a multiple of heads '
                       f'{self.heads}')
    d = width // self.heads
    qkv = nn.Dense(3 * width, dtype=self.dtype, kernel_init=_dense_init,
                   name='qkv')(x).reshape(b, n, 3, self.heads, d)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    scores = jnp.einsum('bqhd,bkhd->bhqk', q, k) * d**-0.5
    weights = jax.nn.softmax(scores.astype(jnp.float32)).astype(self.dtype)
    out = jnp.einsum('bhqk,bkhd->bqhd', weights, v).reshape(b, n, width)
    return nn.Dense(width, dtype=self.dtype, kernel_init=_dense_init,
                    name='proj')(out)


class Block(nn.Module):
  """Pre-norm transformer block: x += attn(LN(x)); x += MLP(LN(x)), the MLP
  fc1 -> GELU -> fc2 with hidden width mlp_ratio * width."""
  heads: int
  mlp_ratio: float = 4.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    norm = lambda name: nn.LayerNorm(1e-6, dtype=self.dtype, name=name)
    x = x + Attention(self.heads, self.dtype, name='attn')(norm('norm1')(x))
    y = nn.Dense(int(width * self.mlp_ratio), dtype=self.dtype,
                 kernel_init=_dense_init, name='fc1')(norm('norm2')(x))
    # Exact (erf) GELU as timm's nn.GELU.
    y = nn.gelu(y, approximate=False)
    return x + nn.Dense(width, dtype=self.dtype, kernel_init=_dense_init,
                        name='fc2')(y)


class VisionTransformer(nn.Module):
  """Returns (logits, features). Features: `hidden{i}` the tokens [B, N, D]
  after block i; `stage{i+1}` the same block's patch tokens as a map
  ([B, h, w, D], or [B, l, D] for 1-D inputs) for feature losses that pair
  with a CNN's stages; `embedding` the class token after the final norm.
  With `distilled`: `cls_logits`, `dist_logits`, and logits their mean (the
  DeiT inference rule, in training too)."""
  num_classes: int
  patch_size: int = 16
  width: int = 768
  depth: int = 12
  heads: int = 12
  mlp_ratio: float = 4.0
  distilled: bool = False
  dtype: jnp.dtype = jnp.float32

  def _patches(self, x):
    """Tokens [B, N, D] of non-overlapping patches and the grid shape."""
    grid = x.shape[1:-1]
    if any(s % self.patch_size for s in grid):
      raise ValueError(f'input size {grid} is not a multiple of patch_size '
                       f'{self.patch_size}; set model.kwargs.patch_size to a '
                       'divisor of it')
    p = (self.patch_size,) * len(grid)
    x = nn.Conv(self.width, p, strides=p, padding='VALID', dtype=self.dtype,
                name='patch_embed')(x)
    return x.reshape(x.shape[0], -1, self.width), x.shape[1:-1]

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # No batch norm; dropout and stochastic depth left out.
    if x.ndim not in (3, 4):
      raise ValueError(f'VisionTransformer takes [B, H, W, C] images or '
                       f'[B, L, C] signals, got shape {x.shape}')
    x, grid = self._patches(x.astype(self.dtype))
    b = x.shape[0]
    names = ('cls_token', 'dist_token') if self.distilled else ('cls_token',)
    tokens = [jnp.broadcast_to(self.param(
        name, nn.initializers.truncated_normal(0.02), (1, 1, self.width)
    ).astype(self.dtype), (b, 1, self.width)) for name in names]
    x = jnp.concatenate([*tokens, x], axis=1)
    pos = self.param('pos_embed', nn.initializers.truncated_normal(0.02),
                     (1, x.shape[1], self.width))
    x = x + pos.astype(self.dtype)

    feats = {}
    for i in range(self.depth):
      x = Block(self.heads, self.mlp_ratio, self.dtype, name=f'blocks{i}')(x)
      feats[f'hidden{i}'] = x
      feats[f'stage{i + 1}'] = x[:, len(names):].reshape(b, *grid, self.width)
    x = nn.LayerNorm(1e-6, dtype=self.dtype, name='norm')(x)
    feats['embedding'] = x[:, 0]
    head = lambda name: nn.Dense(self.num_classes, dtype=self.dtype,
                                 kernel_init=_dense_init, name=name)
    logits = head('head')(x[:, 0]).astype(jnp.float32)
    if self.distilled:
      dist = head('head_dist')(x[:, 1]).astype(jnp.float32)
      feats['cls_logits'], feats['dist_logits'] = logits, dist
      logits = (logits + dist) / 2
    return logits, feats

