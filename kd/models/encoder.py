"""Bidirectional transformer encoder with a masked-LM head (BERT, DistilBERT).

`kd.models.create('transformer_encoder', vocab_size, num_labels=C, **sizes)`:
as for 'transformer_lm', the registry's `num_classes` is the vocabulary (the
masked-LM head classifies every position over it); `num_labels` > 0 adds a
[CLS] classification head of that many classes (0: none, as BertForMaskedLM).

`apply(variables, tokens [B, T] int32, train=False, attention_mask=None,
token_types=None)` returns `(logits [B, T, V] float32, features)`:

  embeddings  LayerNorm(token + position [+ token type]) (Devlin et al. 2019);
              `type_vocab_size=0` drops token types (DistilBERT, Sanh et al.
              2019); `token_types` default to 0, as transformers'.
  blocks      post-LN (BERT): x = LN(x + attn(x)); x = LN(x + mlp(x));
              or `norm='pre'`: x + attn(LN x), x + mlp(LN x), a final LN.
              The blocks' Attention and MLP are `kd.models.transformer`'s,
              bidirectional, without RoPE, biases everywhere; the MLP is
              down(gelu(up x)), GELU by erf (BERT's) unless `mlp='gelu'`
              (its tanh form).
  MLM head    bias + E LN(act(W h + b)): E the token embeddings (tied).
  [CLS] head  classifier(act(pooler h_0 + b)): act tanh (BERT's pooler) or
              relu (DistilBERT's pre_classifier), `pooler_activation`.

`attention_mask` [B, T] (1 or True for real tokens, 0 for padding) keeps
every query from attending to padded keys; positions still count from 0.
Without it, a model of `pad_id` >= 0 takes tokens != pad_id as the mask, so
that a padded batch needs no second input (kd's steps pass token ids only);
`pad_id=-1` attends everywhere.

`head='cls'` (a fine-tuned classifier, BertForSequenceClassification)
returns the [CLS] head's logits [B, num_labels] as the logits and computes no
masked-LM head (nor has its parameters).
No dropout (as every kd model): `train` changes nothing.

Features: `hidden0` (the embeddings after their LayerNorm) .. `hidden{N}`
(the output of block N), as transformers' hidden_states, aliased `stage0` ..
`stage{N}`; `embedding` the last hidden state [B, T, d] (after the final LN
when pre-LN); with `return_attention=True` also `attn0` .. `attn{N-1}`
[B, H, T, T]; with `return_values=True` also `value0` .. `value{N-1}`, the
attention's values [B, T, H, D] (for `kd.losses.features.value_relation`);
with `num_labels` > 0 and the MLM head `cls_logits` [B, num_labels]
float32.

Parameters: `embed/embedding` [V, d], `pos_embed/embedding` [max_len, d],
`type_embed/embedding` [type_vocab_size, d], `embed_norm`; per block
`blocks_{i}/attn/{query,key,value}` (kernel [d, H, D], bias [H, D]),
`blocks_{i}/attn/out` (kernel [H, D, d], bias [d]), `blocks_{i}/attn_norm`,
`blocks_{i}/mlp/{up,down}`, `blocks_{i}/mlp_norm` (the LayerNorm after the
attention and after the MLP when post-LN; before them when pre-LN);
`final_norm` (pre-LN only); `mlm/transform`, `mlm/norm`, `mlm/bias` [V];
`pooler`, `classifier` (with `num_labels`).
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from kd.models import transformer

NORMS = ('post', 'pre')
# The MLP's kind (kd.models.transformer.MLP), whose activation the MLM
# transform shares: 'gelu_exact' GELU by erf (BERT's `gelu`), 'gelu' its
# tanh approximation (`gelu_new`).
MLPS = {'gelu_exact': lambda x: nn.gelu(x, approximate=False),
        'gelu': lambda x: nn.gelu(x, approximate=True)}
HEADS = ('mlm', 'cls')
POOLER_ACTIVATIONS = {'tanh': jnp.tanh, 'relu': nn.relu}


class EncoderBlock(nn.Module):
  """One encoder layer of the shared Attention (bidirectional, biases, no
  RoPE) and MLP, post-LN (BERT) or pre-LN: (x, attention probs or None,
  the attention's values [B, T, H, D])."""
  num_heads: int
  head_size: int
  mlp_hidden: int
  norm: str = 'post'
  norm_eps: float = 1e-12
  mlp: str = 'gelu_exact'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask, return_attention=False):
    layer_norm = lambda name: transformer.make_norm('layer', self.norm_eps,
                                                    self.dtype, name)
    attn = transformer.Attention(
        self.num_heads, self.num_heads, self.head_size, dtype=self.dtype,
        causal=False, rotary=False, qkv_bias=True, out_bias=True, name='attn')
    mlp = transformer.MLP(self.mlp_hidden, self.mlp, self.dtype, bias=True,
                          name='mlp')
    if self.norm == 'pre':
      y, probs, (_, values) = attn(layer_norm('attn_norm')(x), None, None,
                                   return_attention, mask)
      x = x + y
      return x + mlp(layer_norm('mlp_norm')(x)), probs, values
    y, probs, (_, values) = attn(x, None, None, return_attention, mask)
    x = layer_norm('attn_norm')(x + y)
    return layer_norm('mlp_norm')(x + mlp(x)), probs, values


class MLMHead(nn.Module):
  """Masked-LM logits bias + E LN(act(W h + b)), E the tied embedding."""
  norm_eps: float = 1e-12
  mlp: str = 'gelu_exact'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, embed: nn.Embed):
    x = nn.Dense(x.shape[-1], dtype=self.dtype, name='transform')(x)
    x = transformer.make_norm('layer', self.norm_eps, self.dtype, 'norm')(
        MLPS[self.mlp](x))
    bias = self.param('bias', nn.initializers.zeros, (embed.num_embeddings,))
    return embed.attend(x).astype(jnp.float32) + bias


class TransformerEncoder(nn.Module):
  vocab_size: int
  d_model: int = 256
  num_layers: int = 4
  num_heads: int = 4
  mlp_hidden: int | None = None  # None: 4 d_model.
  max_len: int = 512
  type_vocab_size: int = 2  # 0: no token-type embeddings (DistilBERT).
  norm: str = 'post'  # 'post' (BERT, DistilBERT) or 'pre'.
  norm_eps: float = 1e-12
  mlp: str = 'gelu_exact'  # A key of MLPS: the MLP's and MLM transform's.
  num_labels: int = 0  # > 0: a [CLS] classification head.
  head: str = 'mlm'  # The logits: 'mlm' [B, T, V] or 'cls' [B, num_labels].
  pad_id: int = -1  # >= 0: tokens of this id are padding (not attended).
  pooler_activation: str = 'tanh'  # BERT's pooler; 'relu' DistilBERT's.
  return_attention: bool = False
  return_values: bool = False  # value<i> features (MiniLM's value relation).
  dtype: Any = jnp.float32

  @property
  def head_size(self) -> int:
    return self.d_model // self.num_heads

  def setup(self):
    if self.d_model % self.num_heads:
      raise ValueError(f'd_model={self.d_model} is not a multiple of '
                       f'num_heads={self.num_heads}')
    transformer.check_choice('norm', self.norm, NORMS)
    transformer.check_choice('mlp', self.mlp, tuple(MLPS))
    transformer.check_choice('head', self.head, HEADS)
    if self.head == 'cls' and not self.num_labels:
      raise ValueError("head='cls' returns the [CLS] classifier's logits: "
                       'set num_labels > 0')
    transformer.check_choice('pooler_activation', self.pooler_activation,
                             tuple(POOLER_ACTIVATIONS))
    embed = lambda n: nn.Embed(n, self.d_model, dtype=self.dtype,
                               embedding_init=nn.initializers.normal(0.02))
    self.embed = embed(self.vocab_size)
    self.pos_embed = embed(self.max_len)
    if self.type_vocab_size:
      self.type_embed = embed(self.type_vocab_size)
    layer_norm = lambda: transformer.make_norm('layer', self.norm_eps,
                                               self.dtype)
    self.embed_norm = layer_norm()
    self.blocks = [
        EncoderBlock(self.num_heads, self.head_size,
                     self.mlp_hidden or 4 * self.d_model, self.norm,
                     self.norm_eps, self.mlp, self.dtype)
        for _ in range(self.num_layers)]
    if self.norm == 'pre':
      self.final_norm = layer_norm()
    if self.head == 'mlm':
      self.mlm = MLMHead(self.norm_eps, self.mlp, self.dtype)
    if self.num_labels:
      self.pooler = nn.Dense(self.d_model, dtype=self.dtype)
      self.classifier = nn.Dense(self.num_labels, dtype=self.dtype)

  def __call__(self, tokens, train: bool = False, attention_mask=None,
               token_types=None):
    del train  # No dropout.
    b, t = tokens.shape
    if t > self.max_len:
      raise ValueError(f'sequence length {t} exceeds the model context '
                       f'max_len={self.max_len}: shorten the sequences or '
                       f'use a model with a larger max_len')
    x = self.embed(tokens) + self.pos_embed(jnp.arange(t))[None]
    if self.type_vocab_size:
      x = x + self.type_embed(jnp.zeros_like(tokens) if token_types is None
                              else token_types)
    elif token_types is not None:
      raise ValueError('token_types given to an encoder without token-type '
                       'embeddings (type_vocab_size=0)')
    x = self.embed_norm(x)
    if attention_mask is not None:
      mask = jnp.asarray(attention_mask).astype(bool)
    elif self.pad_id >= 0:
      mask = tokens != self.pad_id
    else:
      mask = jnp.ones((b, t), bool)
    features = {'hidden0': x}
    for i, block in enumerate(self.blocks):
      x, probs, values = block(x, mask, self.return_attention)
      features[f'hidden{i + 1}'] = x
      if self.return_attention:
        features[f'attn{i}'] = probs
      if self.return_values:
        features[f'value{i}'] = values
    features.update({f'stage{i}': features[f'hidden{i}']
                     for i in range(self.num_layers + 1)})
    if self.norm == 'pre':
      x = self.final_norm(x)
    features['embedding'] = x
    if self.num_labels:
      pooled = POOLER_ACTIVATIONS[self.pooler_activation](
          self.pooler(x[:, 0]))
      cls_logits = self.classifier(pooled).astype(jnp.float32)
      if self.head == 'cls':  # The logits themselves, not a second head.
        return cls_logits, features
      features['cls_logits'] = cls_logits
    return self.mlm(x, self.embed), features


def create(num_classes: int, head: str = 'mlm', vocab_size: int = 0,
           **kwargs) -> TransformerEncoder:
  """The registry's 'transformer_encoder': `num_classes` is what the
  logits classify, the vocabulary for the masked-LM head (`vocab_size`, if
  given, must agree), the labels for `head='cls'` (`num_labels`; the
  vocabulary is then `vocab_size`, which must be given)."""
  if head == 'cls':
    if vocab_size <= 0:
      raise ValueError("transformer_encoder with head='cls' classifies "
                       f'{num_classes} labels; give its vocabulary as '
                       'model kwargs vocab_size')
    if kwargs.setdefault('num_labels', num_classes) != num_classes:
      raise ValueError(f'num_labels={kwargs["num_labels"]} but the data has '
                       f'{num_classes} classes')
    return TransformerEncoder(vocab_size=vocab_size, head=head, **kwargs)
  if vocab_size and vocab_size != num_classes:
    raise ValueError(f'vocab_size={vocab_size} but the masked-LM head '
                     f'classifies {num_classes} tokens')
  return TransformerEncoder(vocab_size=num_classes, head=head, **kwargs)


def fit_to_student(teacher_params, student_params):
  """A BERT teacher's parameters as a student lacking some of its modules
  takes them (DistilBERT, Sanh et al. 2019, drops token types and the
  pooler); `kd.models.lm.init_from_teacher_layers` applies it first.

  - A student with no token types (`type_vocab_size=0`) gets the teacher's
    type-0 row T_0 added to every position embedding: the embedding sum
    E[x] + P[i] + T_0 = E[x] + (P[i] + T_0), so the student is exact where
    every token type is 0 (single-segment input, the default); a teacher's
    second segment has no counterpart in the student.
  - A student with no [CLS] head (`num_labels=0`) leaves out the teacher's
    pooler and classifier; a student with one the teacher lacks (a
    classifier fine-tuned from a masked-LM run) keeps its own fresh ones.
  - A student with no masked-LM head (`head='cls'`) leaves out the
    teacher's.

  Other parameters pass unchanged (a decoder's: all of them)."""
  params = dict(teacher_params)
  if 'type_embed' in params and 'type_embed' not in student_params:
    type0 = params.pop('type_embed')['embedding'][0]
    params['pos_embed'] = {
        'embedding': params['pos_embed']['embedding'] + type0}
  return fit_heads(params, student_params)


HEAD_MODULES = (('pooler', 'classifier'), ('mlm',))


def fit_heads(params, student_params):
  """`params` (a checkpoint's) without the heads `student_params` lacks and
  with the student's own (fresh) heads the checkpoint lacks; the rest
  unchanged. Reads no values, so it works on a checkpoint's metadata."""
  params = dict(params)
  for head in HEAD_MODULES:
    if head[0] not in student_params:
      for name in head:
        params.pop(name, None)
    elif head[0] not in params:
      params.update({n: student_params[n] for n in head})
  return params
