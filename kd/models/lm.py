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
`k`, `v` [layers, B, L, kv_heads, head_size], `mask` [B, L] (slots holding
real tokens) and `index` (the next slot), L <= max_len;
`apply(variables, tokens, cache, method=TransformerLM.extend)` appends
tokens [B, S] (a prompt, or one token a step) and returns `(logits
[B, S, V], new cache)`.
"""
import math
from typing import Any, Mapping, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kd.models import encoder
from kd.models import transformer


def default_mlp_hidden(d_model: int, mlp: str) -> int:
  """4d for one matrix in (GELU); for the gated MLPs (three matrices) 8d/3
  rounded up to 8, about the same parameters."""
  if mlp in ('gelu', 'gelu_exact'):
    return 4 * d_model
  return -(-8 * d_model // 3 // 8) * 8


POSITIONS = ('rope', 'learned')
SLIDING_LAYERS = ('all', 'even')


class TransformerLM(nn.Module):
  """See the module doc; the options after `rope_base` express the Hugging
  Face decoder families (kd.convert.hf), and their defaults are kd's own
  model. Options: `norm` 'rms' | 'layer' (with `norm_eps`); `positions`
  'rope' | 'learned' (`pos_embed` [max_len, d] added to the token
  embeddings); `rope_scaling` (llama3 only, as HF's dict); `head_dim` (None:
  d_model / num_heads); biases of q/k/v, of the attention output and of the
  MLP; `qk_norm` (RMSNorm of every query and key head before RoPE);
  `sliding_window` W (a query sees its last W slots) on 'all' layers or on
  the 'even' ones; `attn_softcap` / `final_softcap` (cap tanh(x / cap) on
  the attention scores / the logits); `query_scale` (replaces
  1 / sqrt(head_size)); `embed_scale` (token embeddings times sqrt(d_model),
  in the compute dtype); `post_norms` (norms of the attention and MLP
  outputs before the residual add)."""
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
  norm: str = 'rms'
  norm_eps: float = 1e-6
  positions: str = 'rope'
  rope_scaling: Mapping | None = None
  head_dim: int | None = None
  qkv_bias: bool = False
  out_bias: bool = False
  mlp_bias: bool = False
  qk_norm: bool = False
  sliding_window: int | None = None
  sliding_layers: str = 'all'
  attn_softcap: float | None = None
  final_softcap: float | None = None
  query_scale: float | None = None
  embed_scale: bool = False
  post_norms: bool = False
  return_attention: bool = False
  dtype: Any = jnp.float32

  def __post_init__(self):
    # A config's dict, frozen so that the module stays hashable.
    if isinstance(self.rope_scaling, Mapping):
      object.__setattr__(self, 'rope_scaling',
                         flax.core.FrozenDict(self.rope_scaling))
    transformer.check_choice('mlp', self.mlp, transformer.MLPS)
    transformer.check_choice('norm', self.norm, transformer.NORMS)
    transformer.check_choice('positions', self.positions, POSITIONS)
    transformer.check_choice('sliding_layers', self.sliding_layers,
                             SLIDING_LAYERS)
    transformer.check_rope_scaling(self.rope_scaling)
    if self.rope_scaling is not None and self.positions != 'rope':
      raise ValueError(f'rope_scaling needs positions=\'rope\', not '
                       f'{self.positions!r}')
    for name in ('sliding_window', 'attn_softcap', 'final_softcap',
                 'query_scale', 'head_dim', 'norm_eps'):
      value = getattr(self, name)
      if value is not None and not value > 0:
        raise ValueError(f'{name}={value} must be positive (or None)')
    super().__post_init__()

  @property
  def head_size(self) -> int:
    """The size of a query, key and value head."""
    return self.head_dim or self.d_model // self.num_heads

  @property
  def kv_heads(self) -> int:
    return self.num_kv_heads or self.num_heads

  def layer_window(self, layer: int) -> int | None:
    """The sliding window of layer `layer` (None: it sees every slot)."""
    if self.sliding_layers == 'even' and layer % 2:
      return None
    return self.sliding_window

  def setup(self):
    if self.head_dim is None and self.d_model % self.num_heads:
      raise ValueError(f'd_model={self.d_model} is not a multiple of '
                       f'num_heads={self.num_heads}')
    self.embed = nn.Embed(self.vocab_size, self.d_model, dtype=self.dtype,
                          embedding_init=nn.initializers.normal(0.02))
    if self.positions == 'learned':
      self.pos_embed = nn.Embed(self.max_len, self.d_model, dtype=self.dtype,
                                embedding_init=nn.initializers.normal(0.02))
    self.blocks = [
        transformer.Block(
            self.num_heads, self.kv_heads, self.head_size,
            self.mlp_hidden or default_mlp_hidden(self.d_model, self.mlp),
            self.mlp, self.rope_base, self.dtype, norm=self.norm,
            norm_eps=self.norm_eps, post_norms=self.post_norms,
            mlp_bias=self.mlp_bias, rotary=self.positions == 'rope',
            rope_scaling=self.rope_scaling, qkv_bias=self.qkv_bias,
            out_bias=self.out_bias, qk_norm=self.qk_norm,
            sliding_window=self.layer_window(i),
            attn_softcap=self.attn_softcap, query_scale=self.query_scale)
        for i in range(self.num_layers)]
    self.final_norm = transformer.make_norm(self.norm, self.norm_eps,
                                            self.dtype)
    if not self.tied:
      self.head = nn.Dense(self.vocab_size, use_bias=False, dtype=self.dtype)

  def _check_length(self, length: int):
    if length > self.max_len:
      raise ValueError(f'sequence length {length} exceeds the model context '
                       f'max_len={self.max_len}: shorten the sequences or '
                       f'use a model with a larger max_len')

  def _embed(self, tokens, positions):
    x = self.embed(tokens)
    if self.embed_scale:  # Gemma: sqrt(d) rounded to the compute dtype.
      x = x * jnp.asarray(math.sqrt(self.d_model), x.dtype)
    if self.positions == 'learned':
      x = x + self.pos_embed(positions)
    return x

  def _logits(self, x):
    x = self.final_norm(x)
    logits = self.embed.attend(x) if self.tied else self.head(x)
    logits = logits.astype(jnp.float32)
    if self.final_softcap is not None:
      logits = transformer.softcap(logits, self.final_softcap)
    return logits, x

  def __call__(self, tokens, train: bool = False):
    del train  # No dropout.
    b, t = tokens.shape
    self._check_length(t)
    positions = jnp.broadcast_to(jnp.arange(t), (b, t))
    x = self._embed(tokens, positions)
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
    [B, S, V], the cache with them). `positions` [B, S] (RoPE angles or
    rows of the learned position table) default to the slots (pass them for
    left-padded prompts); `token_mask` [B, S] (default all True) marks real
    tokens: keys of False slots are never attended to. A sliding window
    counts slots. index + S must fit the cache (a traced index cannot be
    checked here: past the end, the write would land on the last slots)."""
    b, s = tokens.shape
    self._check_length(s)
    index = cache['index']
    if positions is None:
      positions = jnp.broadcast_to(index + jnp.arange(s), (b, s))
    if token_mask is None:
      token_mask = jnp.ones((b, s), bool)
    valid = jax.lax.dynamic_update_slice(cache['mask'],
                                         token_mask.astype(bool), (0, index))
    x = self._embed(tokens, positions)
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
           model.head_size)
  return {'k': jnp.zeros(shape, model.dtype),
          'v': jnp.zeros(shape, model.dtype),
          'mask': jnp.zeros((batch_size, length), bool),
          'index': jnp.zeros((), jnp.int32)}


def lm_param_count(vocab: int, d_model: int, layers: int, heads: int,
                   kv_heads: int, mlp_hidden: int, mlp: str, tied: bool, *,
                   head_dim: int | None = None, norm: str = 'rms',
                   positions: str = 'rope', max_len: int = 512,
                   qkv_bias: bool = False, out_bias: bool = False,
                   mlp_bias: bool = False, qk_norm: bool = False,
                   post_norms: bool = False) -> int:
  """Parameters of a TransformerLM, with D = head_dim (default d / heads),
  n = 1 per norm for RMSNorm (scale), 2 for LayerNorm (scale and bias),
  m = 3 matrices for the gated MLPs, 2 for GELU:

    V d (embedding) + [V d if untied] + [max_len d if learned positions]
    + n d (final norm)
    + layers * ((2 or 4 with post norms) n d
                + (heads + 2 kv_heads) D d + heads D d   (q, k, v; out)
                + m d mlp_hidden
                + [(heads + 2 kv_heads) D if qkv_bias] + [d if out_bias]
                + [(m - 1) mlp_hidden + d if mlp_bias] + [2 D if qk_norm]).
  """
  d, dh = d_model, head_dim or d_model // heads
  n = 2 if norm == 'layer' else 1
  m = 2 if mlp in ('gelu', 'gelu_exact') else 3
  per_layer = ((4 if post_norms else 2) * n * d +
               (2 * heads + 2 * kv_heads) * dh * d + m * d * mlp_hidden +
               qkv_bias * (heads + 2 * kv_heads) * dh + out_bias * d +
               mlp_bias * ((m - 1) * mlp_hidden + d) + qk_norm * 2 * dh)
  return (vocab * d * (1 if tied else 2) +
          (positions == 'learned') * max_len * d + n * d + layers * per_layer)


def param_count(model: nn.Module) -> int:
  """The parameters `model` has, by shape alone (jax.eval_shape: nothing
  is allocated, so a full-size config counts in milliseconds)."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                             jnp.zeros((1, 1), jnp.int32)))
  return sum(math.prod(p.shape) for p in jax.tree.leaves(shapes['params']))


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
  DistilBERT). Both must have the same width, heads and MLP size. A BERT
  teacher's token types and pooler are first fitted to a student without
  them (`kd.models.encoder.fit_to_student`: exact for single-segment input).
  """
  teacher_params = encoder.fit_to_student(teacher_params, student_params)
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
