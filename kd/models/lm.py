"""Decoder-only transformer language model.

`kd.models.create('transformer_lm', vocab_size, **sizes)`: the registry's
`num_classes` argument is the vocabulary size (a next-token classifier).

`apply(variables, tokens [B, T] int32)` returns `(logits [B, T, V] float32,
features)`. Features: `hidden0` (token embeddings) .. `hidden{N}` (the
output of layer N), aliased `stage0` .. `stage{N}` so that `stage-k` (see
`kd.steps.resolve`) counts layers from the last across depths; `embedding`,
the final-norm hidden state [B, T, d]; with `return_attention=True`, also
`attn0` .. `attn{N-1}`, attention probabilities [B, H, T, T] (off by default:
they cost memory and time).

Incremental decoding: `init_cache` makes an empty cache, a dict of arrays
`k`, `v` [layers, B, L, kv_heads, head_dim], `mask` [B, L] (slots holding
real tokens) and `index` (the next slot), L <= max_len;
`apply(variables, tokens, cache, method=TransformerLM.extend)` appends
tokens [B, S] (a prompt, or one token a step) and returns `(logits
[B, S, V], new cache)`.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kd.models import transformer


def default_mlp_hidden(d_model: int, mlp: str) -> int:
  """4d for GELU; for SwiGLU (three matrices) 8d/3 rounded up to 8, about the
  same parameters."""
  if mlp == 'gelu':
    return 4 * d_model
  return -(-8 * d_model // 3 // 8) * 8


class TransformerLM(nn.Module):
  vocab_size: int
  d_model: int = 256
  num_layers: int = 4
  num_heads: int = 4
  num_kv_heads: int | None = None  # None: num_heads (multi-head attention).
  mlp_hidden: int | None = None  # None: default_mlp_hidden(d_model, mlp).
  mlp: str = 'swiglu'
  tied: bool = True  # The head is the transposed token embedding.
  max_len: int = 512
  rope_base: float = 10_000.0
  return_attention: bool = False
  dtype: Any = jnp.float32

  @property
  def head_dim(self) -> int:
    return self.d_model // self.num_heads

  @property
  def kv_heads(self) -> int:
    return self.num_kv_heads or self.num_heads

  def setup(self):
    if self.d_model % self.num_heads:
      raise ValueError(f'd_model={self.d_model} is not a multiple of '
                       f'num_heads={self.num_heads}')
    self.embed = nn.Embed(self.vocab_size, self.d_model, dtype=self.dtype,
                          embedding_init=nn.initializers.normal(0.02))
    self.blocks = [
        transformer.Block(self.num_heads, self.kv_heads, self.head_dim,
                          self.mlp_hidden or default_mlp_hidden(
                              self.d_model, self.mlp),
                          self.mlp, self.rope_base, self.dtype)
        for _ in range(self.num_layers)]
    self.final_norm = nn.RMSNorm(dtype=self.dtype)
    if not self.tied:
      self.head = nn.Dense(self.vocab_size, use_bias=False, dtype=self.dtype)

  def _check_length(self, length: int):
    if length > self.max_len:
      raise ValueError(f'sequence length {length} exceeds the model context '
                       f'max_len={self.max_len}: shorten the sequences or '
                       f'use a model with a larger max_len')

  def _logits(self, x):
    x = self.final_norm(x)
    logits = self.embed.attend(x) if self.tied else self.head(x)
    return logits.astype(jnp.float32), x

  def __call__(self, tokens, train: bool = False):
    del train  # No dropout.
    b, t = tokens.shape
    self._check_length(t)
    positions = jnp.broadcast_to(jnp.arange(t), (b, t))
    x = self.embed(tokens)
    features = {'hidden0': x}
    for i, block in enumerate(self.blocks):
      x, probs, _ = block(x, positions, None, self.return_attention)
      features[f'hidden{i + 1}'] = x
      if self.return_attention:
        features[f'attn{i}'] = probs
    features.update({f'stage{i}': features[f'hidden{i}']
                     for i in range(self.num_layers + 1)})
    logits, features['embedding'] = self._logits(x)
    return logits, features

  def extend(self, tokens, cache, positions=None, token_mask=None):
    """Appends `tokens` [B, S] at slot `cache['index']`: returns (logits
    [B, S, V], the cache with them). `positions` [B, S] default to the slots
    (pass them for left-padded prompts); `token_mask` [B, S] (default all
    True) marks real tokens: keys of False slots are never attended to.
    index + S must fit the cache (a traced index cannot be checked here:
    past the end, the write would land on the last slots)."""
    b, s = tokens.shape
    self._check_length(s)
    index = cache['index']
    if positions is None:
      positions = jnp.broadcast_to(index + jnp.arange(s), (b, s))
    if token_mask is None:
      token_mask = jnp.ones((b, s), bool)
    valid = jax.lax.dynamic_update_slice(cache['mask'],
                                         token_mask.astype(bool), (0, index))
    x = self.embed(tokens)
    keys, values = [], []
    for i, block in enumerate(self.blocks):
      x, _, (k, v) = block(x, positions,
                           (cache['k'][i], cache['v'][i], valid, index))
      keys.append(k)
      values.append(v)
    logits, _ = self._logits(x)
    return logits, {'k': jnp.stack(keys), 'v': jnp.stack(values),
                    'mask': valid, 'index': index + s}


def init_cache(model: TransformerLM, batch_size: int,
               length: int | None = None) -> dict[str, jax.Array]:
  """An empty key/value cache (see the module doc) of `length` slots
  (default and at most `model.max_len`): attention reads every slot, so a
  cache just long enough for prompt + new tokens decodes faster."""
  length = length or model.max_len
  if length > model.max_len:
    raise ValueError(f'cache length {length} exceeds the model context '
                     f'max_len={model.max_len}')
  shape = (model.num_layers, batch_size, length, model.kv_heads,
           model.head_dim)
  return {'k': jnp.zeros(shape, model.dtype),
          'v': jnp.zeros(shape, model.dtype),
          'mask': jnp.zeros((batch_size, length), bool),
          'index': jnp.zeros((), jnp.int32)}


def lm_param_count(vocab: int, d_model: int, layers: int, heads: int,
                   kv_heads: int, mlp_hidden: int, mlp: str,
                   tied: bool) -> int:
  """Parameters of a TransformerLM, with head_dim = d_model / heads:

    V d (embedding) + d (final norm) + [V d if untied]
    + layers * (2 d (norms) + 2 d^2 (query, out) + 2 d kv_heads head_dim
                + m d mlp_hidden),  m = 3 for SwiGLU, 2 for GELU.
  """
  head_dim = d_model // heads
  per_layer = (2 * d_model + 2 * d_model * heads * head_dim +
               2 * d_model * kv_heads * head_dim +
               (3 if mlp == 'swiglu' else 2) * d_model * mlp_hidden)
  return (vocab * d_model * (1 if tied else 2) + d_model +
          layers * per_layer)


def strided_layer_map(teacher_layers: int, student_layers: int
                      ) -> tuple[int, ...]:
  """Evenly spaced teacher layers, i * teacher / student (DistilBERT's every
  other layer for a half-depth student)."""
  return tuple(i * teacher_layers // student_layers
               for i in range(student_layers))


def layer_names(params) -> list[str]:
  return sorted((k for k in params if k.startswith('blocks_')),
                key=lambda k: int(k.split('_')[1]))


def init_from_teacher_layers(teacher_params, student_params,
                             layer_map: Sequence[int]):
  """Student params with the teacher's embedding, final norm and head, and
  student layer i <- teacher layer `layer_map[i]` (Sanh et al. 2019,
  DistilBERT). Both must have the same width, heads and MLP size."""
  t_layers, s_layers = layer_names(teacher_params), layer_names(student_params)
  if len(layer_map) != len(s_layers):
    raise ValueError(f'layer_map has {len(layer_map)} entries for a student '
                     f'of {len(s_layers)} layers')
  bad = [j for j in layer_map if not 0 <= j < len(t_layers)]
  if bad:
    raise ValueError(f'layer_map {tuple(layer_map)} names teacher layers '
                     f'{bad}; the teacher has {len(t_layers)} layers')
  source = {k: v for k, v in teacher_params.items() if k not in t_layers}
  source.update({s_layers[i]: teacher_params[t_layers[j]]
                 for i, j in enumerate(layer_map)})
  if set(source) != set(student_params):
    raise ValueError(f'teacher and student differ in modules: teacher '
                     f'{sorted(source)} vs student {sorted(student_params)} '
                     f'(tied vs untied embeddings?)')
  t_width = teacher_params['embed']['embedding'].shape[-1]
  s_width = student_params['embed']['embedding'].shape[-1]
  if t_width != s_width:
    raise ValueError(f'cannot copy teacher layers into the student: teacher '
                     f'd_model {t_width} vs student d_model {s_width}; give '
                     f'the student the teacher\'s width')

  def copy(path, s, t):
    if np.shape(s) != np.shape(t):
      raise ValueError(
          f'cannot copy teacher layers into the student: '
          f'{jax.tree_util.keystr(path)} is {np.shape(t)} in the teacher, '
          f'{np.shape(s)} in the student (heads, kv_heads or mlp_hidden '
          f'differ)')
    return jnp.asarray(t, jnp.asarray(s).dtype)

  return jax.tree_util.tree_map_with_path(copy, dict(student_params), source)
