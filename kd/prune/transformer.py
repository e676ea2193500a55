"""Width and depth pruning of kd's transformers, `transformer_lm`,
`transformer_encoder` and the ViT/DeiT (`FAMILIES`; Minitron: Muralidharan
et al. 2024, "Compact Language Models via Pruning and Knowledge
Distillation").

Importance from activations on calibration batches (`scores`), per unit:

  head h of layer l    the L2 norm of the head's attention output (the
                       values it mixes, before the output projection),
  MLP neuron j         |a_j|, its activation (the down projection's input),
  embedding channel c  |n_c| summed over every norm's output (the channel as
                       each attention, MLP and the head read it),

each a score s[b, t] per example b and position t, aggregated as
I = sqrt(sum_b (mean_t s[b, t])^2): the mean over the sequence and the L2
norm over the batch, the aggregation Minitron found best for width.

Layers (`layer_scores`): ShortGPT's block influence, 1 - mean cos(x_in,
x_out) over tokens (Men et al. 2024), or the loss increase on held-out
batches when the block is skipped (the residual passes through).

`prune` keeps the top units (in their order) and slices every matrix that
reads or writes them: an embedding channel is cut from the token (and
position) embeddings, every norm, every projection from and to the
residual stream and an untied head. Under grouped-query attention every kv
group keeps the same number of its query heads, and every kv head.

The encoder (BERT's layout) scores only its tokens, not padding (the
batch's attention_mask, else tokens != pad_id; an MLM batch's 'mask' is
its loss targets, which weigh the skipped-block loss); its embedding
channels are also cut from the token-type embeddings, the embeddings'
norm, the masked-LM transform (both sides: the tied embedding reads its
output) and the pooler's input. It has no head_dim setting (nor has
Hugging Face's BERT, which it exports to), so heads and embedding channels
shrink together. So do the ViT's, whose heads are slices of a joint qkv
projection's columns and of the output projection's rows (`_flat_heads`);
it scores every token, and its MLP's size is int(width * mlp_ratio).
"""
import dataclasses
import re
from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from kd import models
from kd.models import encoder
from kd.models import lm
from kd.models import vit
from kd.prune import targets as targets_lib


class Sizes(NamedTuple):
  d_model: int
  num_layers: int
  num_heads: int
  kv_heads: int
  mlp_hidden: int
  head_dim: int


def _getter(module, kwargs: dict):
  """kwargs[k], or the module's default where unset (None)."""
  fields = module.__dataclass_fields__
  return lambda k: kwargs.get(k) if kwargs.get(k) is not None else (
      fields[k].default)


def _lm_sizes(kwargs: dict) -> Sizes:
  get = _getter(lm.TransformerLM, kwargs)
  d, heads = get('d_model'), get('num_heads')
  return Sizes(d, get('num_layers'), heads, get('num_kv_heads') or heads,
               get('mlp_hidden') or lm.default_mlp_hidden(d, get('mlp')),
               get('head_dim') or d // heads)


def _encoder_sizes(kwargs: dict) -> Sizes:
  get = _getter(encoder.TransformerEncoder, kwargs)
  d, heads = get('d_model'), get('num_heads')
  return Sizes(d, get('num_layers'), heads, heads, get('mlp_hidden') or 4 * d,
               d // heads)


def _vit_sizes(name: str, kwargs: dict) -> Sizes:
  m = models.create(name, 2, **kwargs)  # The registry's size (vit_tiny ..).
  return Sizes(m.width, m.depth, m.heads, m.heads, int(m.width * m.mlp_ratio),
               m.width // m.heads)


def sizes(kwargs: dict, name: str = 'transformer_lm') -> Sizes:
  """The sizes of model `name` of `kwargs` (its defaults filled in)."""
  return FAMILIES[name].sizes(kwargs)


def head_choices(s: Sizes) -> list[int]:
  """Query-head counts a pruned model may keep: all of 1 .. H with one kv
  head per query head (MHA), else multiples of the kv heads (every group
  keeps as many)."""
  if s.kv_heads == s.num_heads:
    return list(range(1, s.num_heads + 1))
  return list(range(s.kv_heads, s.num_heads + 1, s.kv_heads))


def target_sizes(kwargs: dict, width: dict, depth,
                 name: str = 'transformer_lm') -> Sizes:
  """The pruned sizes for `width` ({unit: fraction or size}) and `depth`
  (`targets.Depth`), refusing targets the model cannot take."""
  s = sizes(kwargs, name)
  keep = s.num_layers if depth.keep is None else depth.keep
  if keep > s.num_layers:
    raise ValueError(f'--depth keep:{keep} but the model has {s.num_layers} '
                     f'layers; valid: 1 .. {s.num_layers}')
  full = {'heads': s.num_heads, 'mlp': s.mlp_hidden, 'embed': s.d_model}
  n = {unit: targets_lib.size(
      unit, width[unit], full[unit],
      head_choices(s) if unit == 'heads' else None) if unit in width
       else full[unit] for unit in full}
  if FAMILIES[name].coupled and n['embed'] != n['heads'] * s.head_dim:
    pairs = ', '.join(f'{h}:{h * s.head_dim}' for h in range(1, s.num_heads
                                                             + 1))
    raise ValueError(
        f'--width heads:{width.get("heads", s.num_heads)},embed:'
        f'{width.get("embed", s.d_model)} keeps {n["heads"]} heads and '
        f'{n["embed"]} channels, but a {name}\'s head size is d_model / '
        f'num_heads ({s.head_dim}; no head_dim setting, as Hugging Face\'s '
        'BERT/ViT), so heads and embed shrink together; valid heads:embed '
        f'sizes: {pairs}')
  mha = s.kv_heads == s.num_heads
  return Sizes(n['embed'], keep, n['heads'], n['heads'] if mha else s.kv_heads,
               n['mlp'], s.head_dim)


def pruned_kwargs(kwargs: dict, width: dict, depth,
                  name: str = 'transformer_lm') -> dict:
  """The model kwargs of the pruned `name`: the same model with fewer
  heads, neurons, channels and layers (head size kept)."""
  return resized(kwargs, sizes(kwargs, name),
                 target_sizes(kwargs, width, depth, name), name)


def resized(kwargs: dict, s: Sizes, p: Sizes, name: str) -> dict:
  """`kwargs` of sizes `s` changed to sizes `p`; unchanged defaults stay
  unnamed."""
  if name in VITS:
    return _vit_resized(kwargs, s, p)
  out = dict(kwargs)
  changes = {'d_model': (p.d_model, s.d_model),
             'num_layers': (p.num_layers, s.num_layers),
             'num_heads': (p.num_heads, s.num_heads),
             'mlp_hidden': (p.mlp_hidden, s.mlp_hidden)}
  if p.kv_heads != p.num_heads:  # MHA leaves it None: one per query head.
    changes['num_kv_heads'] = (p.kv_heads, s.kv_heads)
  for key, (new, old) in changes.items():  # Unchanged defaults stay unnamed.
    if new != old or key in kwargs:
      out[key] = new
  if kwargs.get('num_kv_heads') is not None:
    out['num_kv_heads'] = p.kv_heads
  if p.d_model % p.num_heads or p.d_model // p.num_heads != s.head_dim:
    out['head_dim'] = s.head_dim  # The head size is kept.
  if sizes(out, name).mlp_hidden != p.mlp_hidden:  # Its default follows d.
    out['mlp_hidden'] = p.mlp_hidden
  return out


def _vit_resized(kwargs: dict, s: Sizes, p: Sizes) -> dict:
  """A ViT's: width, depth, heads, and mlp_ratio for the neurons kept (its
  hidden size is int(width * mlp_ratio))."""
  out = dict(kwargs)
  for key, new, old in (('width', p.d_model, s.d_model),
                        ('depth', p.num_layers, s.num_layers),
                        ('heads', p.num_heads, s.num_heads)):
    if new != old or key in kwargs:
      out[key] = new
  ratio = kwargs.get('mlp_ratio', s.mlp_hidden / s.d_model)
  if int(p.d_model * ratio) != p.mlp_hidden:
    ratio = p.mlp_hidden / p.d_model
    while int(p.d_model * ratio) < p.mlp_hidden:  # Float rounding.
      ratio = float(np.nextafter(ratio, np.inf))
    out['mlp_ratio'] = ratio
  return out


# What each parameter's axes hold: 'embed' (the residual stream's channels),
# 'heads' (query heads), 'kv' (key/value heads), 'mlp' (hidden neurons).
LM_AXES = (
    (r'(embed|pos_embed)/embedding', {1: 'embed'}),
    (r'blocks_\d+/(attn_norm|mlp_norm|post_attn_norm|post_mlp_norm)/\w+',
     {0: 'embed'}),
    (r'blocks_\d+/attn/query/kernel', {0: 'embed', 1: 'heads'}),
    (r'blocks_\d+/attn/query/bias', {0: 'heads'}),
    (r'blocks_\d+/attn/(key|value)/kernel', {0: 'embed', 1: 'kv'}),
    (r'blocks_\d+/attn/(key|value)/bias', {0: 'kv'}),
    (r'blocks_\d+/attn/(query_norm|key_norm)/scale', {}),
    (r'blocks_\d+/attn/out/kernel', {0: 'heads', 2: 'embed'}),
    (r'blocks_\d+/attn/out/bias', {0: 'embed'}),
    (r'blocks_\d+/mlp/(gate|up)/kernel', {0: 'embed', 1: 'mlp'}),
    (r'blocks_\d+/mlp/(gate|up)/bias', {0: 'mlp'}),
    (r'blocks_\d+/mlp/down/kernel', {0: 'mlp', 1: 'embed'}),
    (r'blocks_\d+/mlp/down/bias', {0: 'embed'}),
    (r'final_norm/\w+', {0: 'embed'}),
    (r'head/kernel', {0: 'embed'}),
)
# The encoder's (kd.models.encoder): the LM's blocks with biases, plus token
# types, the embeddings' norm, the masked-LM head (its transform writes
# channels the tied embedding reads) and the [CLS] pooler.
ENCODER_AXES = LM_AXES + (
    (r'type_embed/embedding', {1: 'embed'}),
    (r'embed_norm/\w+', {0: 'embed'}),
    (r'mlm/transform/kernel', {0: 'embed', 1: 'embed'}),
    (r'mlm/(transform/bias|norm/\w+)', {0: 'embed'}),
    (r'mlm/bias', {}),
    # The pooler's outputs are d_model wide too, scored on their own.
    (r'pooler/kernel', {0: 'embed', 1: 'pooler'}),
    (r'pooler/bias', {0: 'pooler'}),
    (r'classifier/kernel', {0: 'pooler'}),
    (r'classifier/bias', {}),
)
# The ViT's (kd.models.vit): one joint qkv projection, its columns [3, H, D]
# flattened ('qkv': the kept heads' columns of each of q, k, v), the output
# projection's rows [H, D] flattened ('head_cols').
VIT_AXES = (
    (r'patch_embed/kernel', {-1: 'embed'}),
    (r'(patch_embed/bias|blocks\d+/(norm1|norm2)/\w+|norm/\w+)', {0: 'embed'}),
    (r'(cls_token|dist_token|pos_embed)', {2: 'embed'}),
    (r'blocks\d+/attn/qkv/kernel', {0: 'embed', 1: 'qkv'}),
    (r'blocks\d+/attn/qkv/bias', {0: 'qkv'}),
    (r'blocks\d+/attn/proj/kernel', {0: 'head_cols', 1: 'embed'}),
    (r'blocks\d+/(attn/proj|fc2)/bias', {0: 'embed'}),
    (r'blocks\d+/fc1/kernel', {0: 'embed', 1: 'mlp'}),
    (r'blocks\d+/fc1/bias', {0: 'mlp'}),
    (r'blocks\d+/fc2/kernel', {0: 'mlp', 1: 'embed'}),
    (r'(head|head_dist)/kernel', {0: 'embed'}),
    (r'(head|head_dist)/bias', {}),
)
NORM = re.compile(r'(^|/)(attn_norm|mlp_norm|post_attn_norm|post_mlp_norm|'
                  r'final_norm)$')
ENCODER_NORM = re.compile(r'^(embed_norm|blocks_\d+/(attn_norm|mlp_norm)|'
                          r'final_norm|mlm/norm)$')
VIT_NORM = re.compile(r'^(blocks\d+/(norm1|norm2)|norm)$')


def _lm_positions(batch, model) -> np.ndarray:
  """[B, T]: the token mask (every position without one)."""
  del model
  x = np.asarray(batch['image'])
  mask = batch.get('mask')
  return (np.ones(x.shape[:2], np.float32) if mask is None
          else np.asarray(mask, np.float32))


def _encoder_positions(batch, model) -> np.ndarray:
  """[B, T]: the tokens that are not padding (the batch's attention_mask,
  else tokens != the model's pad_id); an MLM batch's 'mask' is its loss
  targets, not the positions the encoder reads."""
  x = np.asarray(batch['image'])
  if batch.get('attention_mask') is not None:
    return np.asarray(batch['attention_mask'], np.float32)
  if model.pad_id >= 0:
    return (x != model.pad_id).astype(np.float32)
  return np.ones(x.shape[:2], np.float32)


def _vit_positions(batch, model) -> None:
  del batch, model
  return None  # Every token: the class token(s) and every patch.


def _loss_weights(batch) -> np.ndarray:
  """The weight of each label: the batch's 'mask' (an LM's tokens, an
  MLM batch's targets, a classification batch's examples), else 1."""
  mask = batch.get('mask')
  return (np.ones(np.shape(batch['label']), np.float32) if mask is None
          else np.asarray(mask, np.float32))


class Family(NamedTuple):
  """What differs between kd's transformers."""
  sizes: Callable[[dict], Sizes]  # Defaults filled in.
  rules: tuple  # (parameter path regex, {axis: unit}).
  norm: re.Pattern  # The norms whose outputs score embedding channels.
  positions: Callable  # (batch, model) -> [B, T] positions scored, or None.
  coupled: bool  # Head size = d_model / heads (no head_dim setting).
  block: str = 'blocks_{}'  # A block's module name.
  heads_in: str = '/attn/out'  # The module reading the heads' outputs,
  mlp_in: str = '/mlp/down'  # and the MLP's activations.

  @property
  def block_re(self) -> re.Pattern:
    return re.compile('^' + self.block.format(r'(\d+)') + '$')


FAMILIES = {
    'transformer_lm': Family(_lm_sizes, LM_AXES, NORM, _lm_positions, False),
    'transformer_encoder': Family(_encoder_sizes, ENCODER_AXES, ENCODER_NORM,
                                  _encoder_positions, True),
}
VITS = tuple(n for n in models.names() if n.startswith(('vit_', 'deit_')))
FAMILIES.update({n: Family(lambda kw, n=n: _vit_sizes(n, kw), VIT_AXES,
                           VIT_NORM, _vit_positions, True, 'blocks{}',
                           '/attn/proj', '/fc2') for n in VITS})


# Activations.


def _path(module) -> str:
  return '/'.join(module.path)


def _unit_scores(path: str, args, out, family: Family, heads: int
                 ) -> tuple[str, int, jax.Array] | None:
  """(unit, layer, per-token score [B, T, n]) of one module call, or None."""
  block = family.block_re.match(path.split('/')[0])
  if block and path.endswith(family.heads_in):  # The heads' outputs.
    x = args[0].astype(jnp.float32)
    if x.ndim == 3:  # [B, T, H * D] (the ViT's) -> [B, T, H, D].
      x = x.reshape(*x.shape[:2], heads, -1)
    return 'heads', int(block.group(1)), jnp.linalg.norm(x, axis=-1)
  if block and path.endswith(family.mlp_in):  # The MLP's activations.
    return 'mlp', int(block.group(1)), jnp.abs(args[0].astype(jnp.float32))
  if family.norm.search(path):
    return 'embed', -1, jnp.abs(out.astype(jnp.float32))
  if path == 'pooler':  # The encoder's [CLS] pooler, one position [B, 1, d].
    return 'pooler', -1, jnp.abs(out.astype(jnp.float32))[:, None]
  return None


def _seq_mean(score, mask):
  """[B, n]: mean_t score[b, t] over the unmasked positions (every one if
  `mask` is None)."""
  if mask is None:
    return jnp.mean(score, 1)
  m = mask.astype(jnp.float32)[..., None]
  return jnp.sum(score * m, 1) / jnp.maximum(jnp.sum(m, 1), 1.0)


def _batch_l2_of_seq_mean(score, mask):
  """sum_b (mean_t score[b, t])^2 over the unmasked positions [n] (its
  square root, over all calibration batches, is the importance)."""
  return jnp.sum(_seq_mean(score, mask)**2, 0)


def capture_fn(model, name: str = 'transformer_lm') -> Callable:
  """`f(variables, x, mask)` -> {('heads'|'mlp', layer) or ('embed', -1):
  sum over the batch of (mean over positions of the score)^2, and
  ('cosine', layer): (sum over tokens of cos(x_in, x_out), tokens)}."""

  family = FAMILIES[name]
  heads = getattr(model, 'heads', None)  # The ViT's, for its flat outputs.

  def f(variables, x, mask):
    found, embed = {}, []

    def intercept(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if context.method_name != '__call__':
        return out
      path = _path(context.module)
      hit = _unit_scores(path, args, out, family, heads)
      if hit is not None:
        unit, layer, score = hit
        if unit == 'embed':  # Summed over the norms before the batch L2.
          embed.append(_seq_mean(score, mask))
        elif unit == 'pooler':
          found[(unit, layer)] = _batch_l2_of_seq_mean(score, None)
        else:
          found[(unit, layer)] = _batch_l2_of_seq_mean(score, mask)
      if (m := family.block_re.match(path)) is not None:
        x_in = args[0].astype(jnp.float32)
        x_out = (out[0] if isinstance(out, tuple) else out).astype(
            jnp.float32)
        cos = jnp.sum(x_in * x_out, -1) / jnp.maximum(
            jnp.linalg.norm(x_in, axis=-1) * jnp.linalg.norm(x_out, axis=-1),
            1e-12)
        w = jnp.ones(cos.shape) if mask is None else mask
        found[('cosine', int(m.group(1)))] = jnp.stack(
            [jnp.sum(cos * w), jnp.sum(w).astype(jnp.float32)])
      return out

    with nn.intercept_methods(intercept):
      model.apply(variables, x, train=False)
    if embed:
      found[('embed', -1)] = jnp.sum(sum(embed)**2, 0)
    return found

  return f


def skipping_loss_fn(model, name: str = 'transformer_lm') -> Callable:
  """`f(variables, x, labels, mask, skip)` -> summed next-token (or label)
  cross-entropy with block `skip` passed through (-1: none)."""

  block = FAMILIES[name].block_re

  def f(variables, x, labels, mask, skip):
    def intercept(next_fun, args, kwargs, context):
      m = block.match(_path(context.module))
      out = next_fun(*args, **kwargs)
      if context.method_name != '__call__' or m is None:
        return out
      if not isinstance(out, tuple):  # The ViT's blocks return x alone.
        return jnp.where(int(m.group(1)) == skip, args[0], out)
      y = jnp.where(int(m.group(1)) == skip, args[0], out[0])
      return (y, *out[1:])

    with nn.intercept_methods(intercept):
      logits, _ = model.apply(variables, x, train=False)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.sum(ce * mask)

  return f


@dataclasses.dataclass
class Scores:
  """Importance of every unit: `heads[l]` [H], `mlp[l]` [M], `embed` [d],
  and `layers` [L] (higher: more important), with how layers were scored;
  an encoder's `pooler` outputs [d] (|activation| of the [CLS] pooler)."""
  heads: dict
  mlp: dict
  embed: np.ndarray | None
  layers: np.ndarray | None = None
  layers_by: str = ''
  pooler: np.ndarray | None = None

  def to_json(self) -> dict:
    out = {'aggregation': 'batch L2 of the sequence mean (Minitron)',
           'heads': {str(l): v.tolist() for l, v in self.heads.items()},
           'mlp': {str(l): v.tolist() for l, v in self.mlp.items()},
           'embed': None if self.embed is None else self.embed.tolist()}
    if self.layers is not None:
      out['layers'] = {'by': self.layers_by, 'scores': self.layers.tolist()}
    if self.pooler is not None:
      out['pooler'] = self.pooler.tolist()
    return out


def width_scores(model, variables, batches, name: str = 'transformer_lm'
                 ) -> Scores:
  family = FAMILIES[name]
  f = jax.jit(capture_fn(model, name))
  totals = {}
  for batch in batches:
    got = f(variables, batch['image'], family.positions(batch, model))
    for k, v in got.items():
      totals[k] = totals.get(k, 0.0) + np.asarray(v)
  pick = lambda unit: {l: np.sqrt(v) for (u, l), v in sorted(totals.items())
                       if u == unit}
  return Scores(pick('heads'), pick('mlp'), pick('embed').get(-1),
                pooler=pick('pooler').get(-1))


def layer_scores(model, variables, batches, num_layers: int, by: str,
                 name: str = 'transformer_lm') -> np.ndarray:
  """[L] block importance: 1 - mean cos(x_in, x_out) ('cosine') or the
  calibration loss increase without the block ('loss'; per weighted
  label)."""
  family = FAMILIES[name]
  if by == 'cosine':
    f = jax.jit(capture_fn(model, name))
    sums = np.zeros((num_layers, 2))
    for batch in batches:
      got = f(variables, batch['image'], family.positions(batch, model))
      for l in range(num_layers):
        sums[l] += np.asarray(got[('cosine', l)])
    return 1.0 - sums[:, 0] / sums[:, 1]
  f = jax.jit(skipping_loss_fn(model, name))
  losses = np.zeros(num_layers + 1)
  count = 0.0
  for batch in batches:
    mask = _loss_weights(batch)
    count += mask.sum()
    for skip in range(-1, num_layers):
      losses[skip + 1] += float(f(variables, batch['image'], batch['label'],
                                  mask, skip))
  return (losses[1:] - losses[0]) / count


# Slicing.


def kept_units(scores: Scores, s: Sizes, p: Sizes, layers: list[int]
               ) -> dict:
  """{('heads'|'kv'|'mlp', old layer): kept indices, ('embed', -1): ...},
  each the top scores in their original order."""
  top = lambda v, n: np.sort(np.argsort(-np.asarray(v), kind='stable')[:n])
  kept = {('embed', -1): (top(scores.embed, p.d_model)
                          if scores.embed is not None
                          else np.arange(s.d_model)),
          ('pooler', -1): (top(scores.pooler, p.d_model)
                           if scores.pooler is not None
                           else np.arange(s.d_model))}
  group = s.num_heads // s.kv_heads
  for l in layers:
    h = scores.heads[l]
    if s.kv_heads == s.num_heads:
      kept[('heads', l)] = kept[('kv', l)] = top(h, p.num_heads)
    else:  # Each kv group keeps its best p.num_heads / kv query heads.
      per = p.num_heads // s.kv_heads
      kept[('heads', l)] = np.concatenate(
          [g * group + top(h[g * group:(g + 1) * group], per)
           for g in range(s.kv_heads)])
      kept[('kv', l)] = np.arange(s.kv_heads)
    kept[('mlp', l)] = top(scores.mlp[l], p.mlp_hidden)
  return kept


def _flat_heads(kept: dict, s: Sizes) -> dict:
  """`kept` with, per layer, the kept heads' columns of a joint [3, H, D]
  qkv projection ('qkv') and rows of a flat [H * D] input ('head_cols')."""
  out = dict(kept)
  for (unit, l), heads in kept.items():
    if unit == 'heads':
      cols = (np.asarray(heads)[:, None] * s.head_dim +
              np.arange(s.head_dim)).reshape(-1)
      out[('head_cols', l)] = cols
      out[('qkv', l)] = np.concatenate(
          [i * s.num_heads * s.head_dim + cols for i in range(3)])
  return out


def axes_of(path: str, rules=LM_AXES) -> dict:
  for pattern, axes in rules:
    if re.fullmatch(pattern, path):
      return axes
  raise ValueError(f'kd.prune does not know parameter {path!r} of this '
                   'model: no rule says which of its axes are heads, '
                   'neurons or channels')


def slice_params(params, kept: dict, layers: list[int],
                 name: str = 'transformer_lm', s: Sizes | None = None):
  """The parameters with only the `kept` units, and block `layers[i]`
  renamed block i (`s`: the source's sizes, for flat head axes)."""
  family = FAMILIES[name]
  rules, block = family.rules, family.block
  renamed = {block.format(i): l for i, l in enumerate(layers)}
  if s is not None:
    kept = _flat_heads(kept, s)

  def cut(path_keys, leaf):
    path = '/'.join(str(getattr(k, 'key', k)) for k in path_keys)
    top = path.split('/')[0]
    layer = renamed.get(top, -1)
    x = np.asarray(leaf)
    for axis, unit in axes_of(path, rules).items():
      index = kept[(unit, layer) if unit != 'embed' else ('embed', -1)]
      x = np.take(x, index, axis=axis)
    return x

  source = {k: v for k, v in params.items() if not family.block_re.match(k)}
  source.update({new: params[block.format(old)]
                 for new, old in renamed.items()})
  return jax.tree_util.tree_map_with_path(cut, source)
