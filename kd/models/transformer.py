"""Transformer blocks shared by the language model and the encoder.

Pre-norm blocks, `x + attn(norm(x))` then `x + mlp(norm(x))`, by default with
RMSNorm, rotary position embeddings, grouped-query attention and no biases
(as LLaMA). Options cover the published decoder families: LayerNorm and
biases (GPT-2), q/k/v biases (Qwen2), RMSNorm of each query and key head
(Qwen3), a sliding attention window (Mistral), attention soft-capping, a
query scale and norms after attention and MLP (Gemma 2), llama3 RoPE
scaling. Parameters are float32; `dtype` is the compute dtype. Each formula
follows Hugging Face transformers' implementation of the family.

Attention can read and write an explicit key/value cache: a tuple
`(keys [B, L, KV, D], values [B, L, KV, D], valid [B, L] bool, index)` where
the new keys land at slots `index .. index + S - 1` and a query at slot
`index + s` sees the valid slots up to its own (and, with a sliding window
W, from `index + s - W + 1`). The cache is plain arrays in and out (no
mutable collection), so prefill and decode export as functions.
"""
import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# 'gelu' is GELU's tanh approximation (GPT-2's gelu_new, Gemma's
# gelu_pytorch_tanh); 'gelu_exact' the erf form (BERT's gelu).
MLPS = ('swiglu', 'gelu', 'geglu', 'gelu_exact')
NORMS = ('rms', 'layer')
ROPE_SCALINGS = ('llama3',)
LLAMA3_KEYS = ('factor', 'low_freq_factor', 'high_freq_factor',
               'original_max_position_embeddings')


def check_choice(kind: str, value, valid: tuple) -> None:
  if value not in valid:
    raise ValueError(f'unknown {kind} {value!r}; valid: {valid}')


def make_norm(kind: str, eps: float, dtype, name: str | None = None):
  """RMSNorm, x / sqrt(mean(x^2) + eps) * scale, or LayerNorm,
  (x - mean) / sqrt(var + eps) * scale + bias, both reduced in float32 (the
  two-pass variance, as torch's LayerNorm)."""
  check_choice('norm', kind, NORMS)
  if kind == 'rms':
    return nn.RMSNorm(epsilon=eps, dtype=dtype, name=name)
  return nn.LayerNorm(epsilon=eps, dtype=dtype, use_fast_variance=False,
                      name=name)


def check_rope_scaling(scaling: Mapping | None) -> None:
  """Refuses a RoPE scaling kd does not implement, naming it."""
  if scaling is None:
    return
  kind = scaling.get('rope_type', scaling.get('type'))
  if kind not in ROPE_SCALINGS:
    raise ValueError(f'unsupported rope_scaling type {kind!r}; valid: '
                     f'{ROPE_SCALINGS} or None (plain RoPE)')
  missing = [k for k in LLAMA3_KEYS if k not in scaling]
  if missing:
    raise ValueError(f'rope_scaling of type llama3 lacks {missing}; it needs '
                     f'{LLAMA3_KEYS}')


def rope_frequencies(head_size: int, base: float = 10_000.0,
                     scaling: Mapping | None = None) -> jax.Array:
  """Inverse frequencies [head_size // 2] of RoPE, base^(-2i/D), and with
  `scaling` of type llama3 (Meta's Llama 3.1), for wavelengths 2 pi / f
  against the original context C:

    f                       where 2 pi / f < C / high_freq_factor,
    f / factor              where 2 pi / f > C / low_freq_factor,
    (1 - s) f / factor + s f  otherwise, s = (C f / 2 pi - low) / (high - low).
  """
  half = head_size // 2
  freq = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  if scaling is None:
    return freq
  check_rope_scaling(scaling)
  factor, low, high, context = (scaling[k] for k in LLAMA3_KEYS)
  wavelen = 2 * math.pi / freq
  smooth = (context / wavelen - low) / (high - low)
  medium = (1 - smooth) * freq / factor + smooth * freq
  return jnp.where(wavelen < context / high, freq,
                   jnp.where(wavelen > context / low, freq / factor, medium))


def rope(x: jax.Array, positions: jax.Array, base: float = 10_000.0,
         scaling: Mapping | None = None):
  """Rotary position embedding (Su et al. 2021) of `x` [B, T, H, D] at
  integer `positions` [B, T]: the halves (x1, x2) of every head rotate by
  angle p * f_i (`rope_frequencies`),

    (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin),

  so q.k depends on positions only through their difference (transformers'
  rotate_half form)."""
  freq = rope_frequencies(x.shape[-1], base, scaling)
  angle = positions.astype(jnp.float32)[:, :, None, None] * freq
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def softcap(x: jax.Array, cap: float) -> jax.Array:
  """cap * tanh(x / cap): x squashed smoothly into (-cap, cap) (Gemma 2)."""
  return cap * jnp.tanh(x / cap)


def attention_mask(query_slots: jax.Array, key_slots: jax.Array,
                   causal: bool = True, window: int | None = None):
  """[S, L] bool: a query at slot q sees a key at slot k when k <= q
  (causal) and k > q - window (transformers' sliding window: the last
  `window` slots, its own included)."""
  gap = query_slots[:, None] - key_slots[None, :]
  mask = jnp.ones(gap.shape, bool)
  if causal:
    mask = gap >= 0
  if window is not None:
    mask = mask & (gap < window)
  return mask


class Attention(nn.Module):
  """Multi-head attention with `num_kv_heads` key/value heads shared by
  groups of `num_heads // num_kv_heads` query heads (GQA; MHA when equal).

  Scores: (q . k) * query_scale (default 1 / sqrt(head_dim)), then
  `softcap` if set, then the mask (causal, sliding window, `key_mask`),
  softmax in float32. `rotary=False` (learned or no positions) skips RoPE;
  then `positions` may be None.

  Returns (output [B, S, d], probabilities [B, H, S, L] or None, (keys,
  values) as stored: the whole updated cache, or this call's own)."""
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rope_base: float = 10_000.0
  dtype: Any = jnp.float32
  causal: bool = True
  rotary: bool = True
  rope_scaling: Mapping | None = None
  qkv_bias: bool = False
  out_bias: bool = False
  qk_norm: bool = False  # RMSNorm over head_dim of q and k, before RoPE.
  norm_eps: float = 1e-6
  sliding_window: int | None = None
  softcap: float | None = None
  query_scale: float | None = None

  @nn.compact
  def __call__(self, x, positions=None, cache=None, return_attention=False,
               key_mask=None):
    """`key_mask` [B, L] bool (optional): keys that may be attended to."""
    h, kv, d = self.num_heads, self.num_kv_heads, self.head_dim
    if h % kv:
      raise ValueError(f'num_heads={h} is not a multiple of num_kv_heads={kv}')
    if self.sliding_window is not None and not self.causal:
      raise ValueError('sliding_window needs causal attention')
    dense = lambda heads, name: nn.DenseGeneral(
        (heads, d), use_bias=self.qkv_bias, dtype=self.dtype, name=name)
    q, k, v = dense(h, 'query')(x), dense(kv, 'key')(x), dense(kv, 'value')(x)
    if self.qk_norm:
      q = make_norm('rms', self.norm_eps, self.dtype, 'query_norm')(q)
      k = make_norm('rms', self.norm_eps, self.dtype, 'key_norm')(k)
    if self.rotary:
      q = rope(q, positions, self.rope_base, self.rope_scaling)
      k = rope(k, positions, self.rope_base, self.rope_scaling)
    s = x.shape[1]
    if cache is None:
      keys, values, valid, index = k, v, key_mask, 0
    else:
      cache_k, cache_v, valid, index = cache
      keys = lax.dynamic_update_slice(cache_k, k.astype(cache_k.dtype),
                                      (0, index, 0, 0))
      values = lax.dynamic_update_slice(cache_v, v.astype(cache_v.dtype),
                                        (0, index, 0, 0))
      if key_mask is not None:
        valid = valid & key_mask
    mask = attention_mask(index + jnp.arange(s), jnp.arange(keys.shape[1]),
                          self.causal, self.sliding_window)[None]
    if valid is not None:
      mask = mask & valid[:, None, :]
    b = q.shape[0]
    q = q.reshape(b, s, kv, h // kv, d)  # Query head i*G+g reads kv head i.
    logits = jnp.einsum('bskgd,blkd->bkgsl', q, keys.astype(self.dtype))
    logits = logits.astype(jnp.float32)
    if self.query_scale is None:
      logits = logits / jnp.sqrt(d).astype(jnp.float32)
    else:
      logits = logits * jnp.float32(self.query_scale)
    if self.softcap is not None:
      logits = softcap(logits, self.softcap)
    logits = jnp.where(mask[:, None, None], logits,
                       jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum('bkgsl,blkd->bskgd', probs.astype(self.dtype),
                     values.astype(self.dtype)).reshape(b, s, h, d)
    out = nn.DenseGeneral(x.shape[-1], axis=(-2, -1), use_bias=self.out_bias,
                          dtype=self.dtype, name='out')(out)
    probs = probs.reshape(b, h, s, -1) if return_attention else None
    return out, probs, (keys, values)


class MLP(nn.Module):
  """SwiGLU, down(silu(gate x) * up x) (Shazeer 2020); GeGLU,
  down(gelu_tanh(gate x) * up x) (Gemma); GELU, down(gelu_tanh(up x)); or
  exact GELU, down(gelu_erf(up x)) (BERT)."""
  hidden: int
  kind: str = 'swiglu'
  dtype: Any = jnp.float32
  bias: bool = False

  @nn.compact
  def __call__(self, x):
    check_choice('mlp', self.kind, MLPS)
    dense = lambda width, name: nn.Dense(width, use_bias=self.bias,
                                         dtype=self.dtype, name=name)
    if self.kind in ('swiglu', 'geglu'):
      act = nn.silu if self.kind == 'swiglu' else nn.gelu
      y = act(dense(self.hidden, 'gate')(x)) * dense(self.hidden, 'up')(x)
    else:
      y = nn.gelu(dense(self.hidden, 'up')(x),
                  approximate=self.kind == 'gelu')
    return dense(x.shape[-1], 'down')(y)


class Block(nn.Module):
  """Pre-norm transformer block: (x, attention probs, (keys, values)),

    x += post_attn_norm(attn(attn_norm(x)))
    x += post_mlp_norm(mlp(mlp_norm(x)))

  the post norms only with `post_norms` (Gemma 2)."""
  num_heads: int
  num_kv_heads: int
  head_dim: int
  mlp_hidden: int
  mlp: str = 'swiglu'
  rope_base: float = 10_000.0
  dtype: Any = jnp.float32
  norm: str = 'rms'
  norm_eps: float = 1e-6
  post_norms: bool = False
  mlp_bias: bool = False
  causal: bool = True
  rotary: bool = True
  rope_scaling: Mapping | None = None
  qkv_bias: bool = False
  out_bias: bool = False
  qk_norm: bool = False
  sliding_window: int | None = None
  attn_softcap: float | None = None
  query_scale: float | None = None

  @nn.compact
  def __call__(self, x, positions, cache=None, return_attention=False,
               key_mask=None):
    norm = lambda name: make_norm(self.norm, self.norm_eps, self.dtype, name)
    y, probs, kv = Attention(
        self.num_heads, self.num_kv_heads, self.head_dim, self.rope_base,
        self.dtype, causal=self.causal, rotary=self.rotary,
        rope_scaling=self.rope_scaling, qkv_bias=self.qkv_bias,
        out_bias=self.out_bias, qk_norm=self.qk_norm, norm_eps=self.norm_eps,
        sliding_window=self.sliding_window, softcap=self.attn_softcap,
        query_scale=self.query_scale, name='attn')(
            norm('attn_norm')(x), positions, cache, return_attention,
            key_mask)
    if self.post_norms:
      y = norm('post_attn_norm')(y)
    x = x + y
    y = MLP(self.mlp_hidden, self.mlp, self.dtype, self.mlp_bias,
            name='mlp')(norm('mlp_norm')(x))
    if self.post_norms:
      y = norm('post_mlp_norm')(y)
    return x + y, probs, kv
