"""Transformer blocks shared by the language model (and a later ViT).

Pre-norm blocks, `x + attn(norm(x))` then `x + mlp(norm(x))`, with RMSNorm,
rotary position embeddings and grouped-query attention. Parameters are
float32; `dtype` is the compute dtype. No biases (as LLaMA).

Attention can read and write an explicit key/value cache: a tuple
`(keys [B, L, KV, D], values [B, L, KV, D], valid [B, L] bool, index)` where
the new keys land at slots `index .. index + S - 1` and a query at slot
`index + s` sees the valid slots up to its own. The cache is plain arrays in
and out (no mutable collection), so prefill and decode export as functions.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

MLPS = ('swiglu', 'gelu')


def rope(x: jax.Array, positions: jax.Array, base: float = 10_000.0):
  """Rotary position embedding (Su et al. 2021) of `x` [B, T, H, D] at
  integer `positions` [B, T]: the halves (x1, x2) of every head rotate by
  angle p * base^(-2i/D),

    (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin),

  so q.k depends on positions only through their difference."""
  half = x.shape[-1] // 2
  freq = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angle = positions.astype(jnp.float32)[:, :, None, None] * freq
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def causal_mask(length: int) -> jax.Array:
  """[1, T, T]: query t sees keys 0..t."""
  return jnp.tril(jnp.ones((length, length), bool))[None]


class Attention(nn.Module):
  """Multi-head attention with `num_kv_heads` key/value heads shared by
  groups of `num_heads // num_kv_heads` query heads (GQA; MHA when equal).

  Returns (output [B, S, d], probabilities [B, H, S, L] or None, (keys,
  values) as stored: the whole updated cache, or this call's own)."""
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rope_base: float = 10_000.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, positions, cache=None, return_attention=False):
    h, kv, d = self.num_heads, self.num_kv_heads, self.head_dim
    if h % kv:
      raise ValueError(f'num_heads={h} is not a multiple of num_kv_heads={kv}')
    dense = lambda heads, name: nn.DenseGeneral(
        (heads, d), use_bias=False, dtype=self.dtype, name=name)
    q = rope(dense(h, 'query')(x), positions, self.rope_base)
    k = rope(dense(kv, 'key')(x), positions, self.rope_base)
    v = dense(kv, 'value')(x)
    if cache is None:
      keys, values, mask = k, v, causal_mask(x.shape[1])
    else:
      cache_k, cache_v, valid, index = cache
      keys = lax.dynamic_update_slice(cache_k, k.astype(cache_k.dtype),
                                      (0, index, 0, 0))
      values = lax.dynamic_update_slice(cache_v, v.astype(cache_v.dtype),
                                        (0, index, 0, 0))
      slots = jnp.arange(keys.shape[1])
      seen = slots[None, :] <= index + jnp.arange(x.shape[1])[:, None]
      mask = seen[None] & valid[:, None, :]
    b, s = q.shape[:2]
    q = q.reshape(b, s, kv, h // kv, d)  # Query head i*G+g reads kv head i.
    logits = jnp.einsum('bskgd,blkd->bkgsl', q, keys.astype(self.dtype))
    logits = logits.astype(jnp.float32) / jnp.sqrt(d).astype(jnp.float32)
    logits = jnp.where(mask[:, None, None], logits,
                       jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum('bkgsl,blkd->bskgd', probs.astype(self.dtype),
                     values.astype(self.dtype)).reshape(b, s, h, d)
    out = nn.DenseGeneral(x.shape[-1], axis=(-2, -1), use_bias=False,
                          dtype=self.dtype, name='out')(out)
    probs = probs.reshape(b, h, s, -1) if return_attention else None
    return out, probs, (keys, values)


class MLP(nn.Module):
  """SwiGLU, down(silu(gate x) * up x) (Shazeer 2020), or GELU,
  down(gelu(up x))."""
  hidden: int
  kind: str = 'swiglu'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.kind not in MLPS:
      raise ValueError(f'unknown mlp {self.kind!r}; valid: {MLPS}')
    dense = lambda width, name: nn.Dense(width, use_bias=False,
                                         dtype=self.dtype, name=name)
    if self.kind == 'swiglu':
      y = nn.silu(dense(self.hidden, 'gate')(x)) * dense(self.hidden, 'up')(x)
    else:
      y = nn.gelu(dense(self.hidden, 'up')(x))
    return dense(x.shape[-1], 'down')(y)


class Block(nn.Module):
  """Pre-norm transformer block: (x, attention probs, (keys, values))."""
  num_heads: int
  num_kv_heads: int
  head_dim: int
  mlp_hidden: int
  mlp: str = 'swiglu'
  rope_base: float = 10_000.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, positions, cache=None, return_attention=False):
    y, probs, kv = Attention(self.num_heads, self.num_kv_heads, self.head_dim,
                             self.rope_base, self.dtype, name='attn')(
                                 nn.RMSNorm(dtype=self.dtype,
                                            name='attn_norm')(x),
                                 positions, cache, return_attention)
    x = x + y
    x = x + MLP(self.mlp_hidden, self.mlp, self.dtype, name='mlp')(
        nn.RMSNorm(dtype=self.dtype, name='mlp_norm')(x))
    return x, probs, kv
