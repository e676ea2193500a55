"""Decoder-only HF families -> kd's `transformer_lm` (kd.models.lm), both
ways: gpt2, llama, mistral, qwen2, qwen3, gemma2.

Config keys (a config that omits one gets transformers' default for that
class) map to TransformerLM options:

  hidden_size / n_embd -> d_model; num_hidden_layers / n_layer -> num_layers;
  num_attention_heads / n_head -> num_heads; num_key_value_heads ->
  num_kv_heads; head_dim -> head_dim; intermediate_size / n_inner ->
  mlp_hidden; max_position_embeddings / n_positions -> max_len;
  rms_norm_eps / layer_norm_epsilon -> norm_eps; tie_word_embeddings -> tied;
  rope_theta (or rope_parameters.rope_theta) -> rope_base; rope_scaling /
  rope_parameters of rope_type llama3 -> rope_scaling; attention_bias ->
  qkv_bias and out_bias (qwen2: q, k, v biases always); mlp_bias;
  sliding_window with layer_types (or use_sliding_window) -> sliding_window
  and sliding_layers; gemma2's query_pre_attn_scalar -> query_scale,
  attn_logit_softcapping / final_logit_softcapping -> attn_softcap /
  final_softcap.

Tensors: q/k/v_proj [H D, d] -> attn/{query,key,value}/kernel [d, H, D];
o_proj [d, H D] -> attn/out/kernel [H, D, d]; gate/up/down_proj -> mlp
kernels (transposed); norms' weight -> scale (gemma2: 1 + weight); GPT-2's
Conv1D weights are [in, out] already and its c_attn is split into q, k, v.
"""
import re

from kd.convert import hf_table
from kd.convert.hf_table import (Family, Reader, Tensor, UnsupportedError,
                                 copy, linear, reshape, split)
from kd.models import lm

MODEL = 'transformer_lm'

# TransformerLM's defaults for the options conversion sets (SPEC21): a kd
# model's kwargs are completed with them before comparing both ways.
DEFAULTS = dict(
    num_kv_heads=None, mlp_hidden=None, mlp='swiglu', tied=True, max_len=512,
    rope_base=10_000.0, norm='rms', norm_eps=1e-6, positions='rope',
    rope_scaling=None, head_dim=None, qkv_bias=False, out_bias=False,
    mlp_bias=False, qk_norm=False, sliding_window=None, sliding_layers='all',
    attn_softcap=None, final_softcap=None, query_scale=None,
    embed_scale=False, post_norms=False)
LLAMA3_KEYS = ('factor', 'low_freq_factor', 'high_freq_factor',
               'original_max_position_embeddings')


def complete(kwargs: dict) -> dict:
  """`kwargs` with every option (DEFAULTS for those not given), sizes
  explicit: num_kv_heads, head_dim and mlp_hidden resolved."""
  kw = {**DEFAULTS, **kwargs}
  kw['num_kv_heads'] = kw['num_kv_heads'] or kw['num_heads']
  kw['head_dim'] = kw['head_dim'] or kw['d_model'] // kw['num_heads']
  kw['mlp_hidden'] = kw['mlp_hidden'] or lm.default_mlp_hidden(
      kw['d_model'], kw['mlp'])
  if not kw['sliding_window']:
    kw['sliding_window'], kw['sliding_layers'] = None, 'all'
  return kw


def _rope(r: Reader) -> tuple[float, dict | None]:
  """(rope_base, rope_scaling) from rope_theta + rope_scaling (transformers
  4) or rope_parameters (transformers 5)."""
  params = {**(r('rope_scaling') or {}), **(r('rope_parameters') or {})}
  base = float(params.pop('rope_theta', r('rope_theta', 10_000.0)))
  kind = params.get('rope_type', params.get('type', 'default'))
  if r('partial_rotary_factor', 1.0) != 1.0:
    raise UnsupportedError(
        f'{r.model_type} config partial_rotary_factor='
        f'{r("partial_rotary_factor")} is not supported; supported: 1.0 '
        '(rotary embedding over the whole head)')
  if kind == 'default':
    return base, None
  if kind != 'llama3':
    raise UnsupportedError(
        f'{r.model_type} config rope_scaling of type {kind!r} is not '
        "supported; supported: none ('default') and 'llama3'")
  missing = [k for k in LLAMA3_KEYS if k not in params]
  if missing:
    raise UnsupportedError(f'{r.model_type} config rope_scaling (llama3) '
                           f'lacks {", ".join(missing)}')
  return base, {'rope_type': 'llama3',
                **{k: params[k] for k in LLAMA3_KEYS}}


def _sliding(r: Reader, layers: int, default_pattern: str | None):
  """(sliding_window, sliding_layers) from sliding_window and layer_types
  (transformers 5) or the family's pattern (`default_pattern`: 'all',
  'even' or None: no window) where a config has no layer_types."""
  window = r('sliding_window')
  types = r('layer_types')
  if types is None:
    pattern = default_pattern if window else None
  else:
    sliding = [t == 'sliding_attention' for t in types]
    unknown = sorted({t for t in types} - {'sliding_attention',
                                           'full_attention'})
    if unknown or len(types) != layers:
      raise UnsupportedError(
          f'{r.model_type} config layer_types {types} is not supported; '
          "supported: 'full_attention' and 'sliding_attention', one a layer")
    pattern = ('all' if all(sliding) else
               'even' if sliding == [i % 2 == 0 for i in range(layers)] else
               None if not any(sliding) else 'other')
    if pattern == 'other':
      raise UnsupportedError(
          f'{r.model_type} config layer_types {types}: sliding attention on '
          'these layers is not supported; supported: all layers or the even '
          'layers (0, 2, ...)')
  if pattern and not window:
    raise UnsupportedError(f'{r.model_type} config: sliding layers without '
                           'a sliding_window')
  return (int(window), pattern) if pattern else (None, 'all')


def _llama_like(hf: dict, model_type: str, defaults: dict, *,
                qkv_bias: bool | None = None, qk_norm: bool = False,
                sliding: str | None = None) -> tuple[str, dict, int]:
  """kd kwargs of llama, mistral, qwen2, qwen3 (and gemma2's shared part):
  the same layout."""
  r = Reader(hf, defaults, model_type)
  if model_type == 'gemma2':
    r.require('hidden_activation', ('gelu_pytorch_tanh',),
              r('hidden_act', 'gelu_pytorch_tanh'))
  else:
    r.require('hidden_act', ('silu',), 'silu')
  d, heads = r('hidden_size'), r('num_attention_heads')
  layers = r('num_hidden_layers')
  base, scaling = _rope(r)
  if model_type in ('qwen2', 'qwen3') and r('use_sliding_window'):
    raise UnsupportedError(
        f'{model_type} config use_sliding_window=True is not supported; '
        'supported: False (full attention on every layer)')
  if r('use_bidirectional_attention'):
    raise UnsupportedError(
        f'{model_type} config use_bidirectional_attention=True is not '
        'supported; supported: False (causal attention)')
  window, pattern = _sliding(r, layers, sliding)
  attention_bias = bool(r('attention_bias', False))
  kw = dict(d_model=d, num_layers=layers, num_heads=heads,
            num_kv_heads=r('num_key_value_heads') or heads,
            head_dim=r('head_dim') or d // heads,
            mlp_hidden=r('intermediate_size'), mlp='swiglu',
            tied=bool(r('tie_word_embeddings')),
            max_len=r('max_position_embeddings'), rope_base=base,
            rope_scaling=scaling, norm='rms', norm_eps=r('rms_norm_eps'),
            qkv_bias=attention_bias if qkv_bias is None else qkv_bias,
            out_bias=attention_bias, mlp_bias=bool(r('mlp_bias', False)),
            qk_norm=qk_norm, sliding_window=window, sliding_layers=pattern)
  return MODEL, kw, r('vocab_size')


def _llama_config(kw: dict, vocab: int, model_type: str) -> dict:
  """The HF config.json of a llama-like family from complete kd kwargs."""
  rope = {'rope_theta': kw['rope_base'], 'rope_type': 'default'}
  if kw['rope_scaling']:
    rope.update(kw['rope_scaling'])
  cfg = dict(
      model_type=model_type, vocab_size=vocab, hidden_size=kw['d_model'],
      num_hidden_layers=kw['num_layers'],
      num_attention_heads=kw['num_heads'],
      num_key_value_heads=kw['num_kv_heads'], head_dim=kw['head_dim'],
      intermediate_size=kw['mlp_hidden'], hidden_act='silu',
      max_position_embeddings=kw['max_len'], rms_norm_eps=kw['norm_eps'],
      tie_word_embeddings=kw['tied'], rope_theta=kw['rope_base'],
      rope_scaling=kw['rope_scaling'], rope_parameters=rope)
  if model_type in ('llama', 'qwen3'):
    cfg.update(attention_bias=kw['out_bias'])
  if model_type == 'llama':
    cfg.update(mlp_bias=kw['mlp_bias'])
  if model_type == 'mistral':
    cfg.update(sliding_window=kw['sliding_window'])
  if model_type in ('qwen2', 'qwen3'):
    cfg.update(use_sliding_window=False, sliding_window=None,
               max_window_layers=kw['num_layers'])
  return cfg


def _decoder_table(kw: dict, vocab: int) -> list[Tensor]:
  """The llama layout with the options of `kw` (complete kwargs); gemma2's
  four norms a layer when post_norms."""
  d, h, kv, hd, m = (kw['d_model'], kw['num_heads'], kw['num_kv_heads'],
                     kw['head_dim'], kw['mlp_hidden'])
  plus = 1.0 if kw['post_norms'] else 0.0  # Gemma's (1 + w) norms.
  t = [copy('model.embed_tokens.weight', 'embed/embedding', (vocab, d))]
  for i in range(kw['num_layers']):
    hf, kd = f'model.layers.{i}.', f'blocks_{i}/'
    t.append(copy(f'{hf}input_layernorm.weight', f'{kd}attn_norm/scale', (d,),
                  plus))
    for name, proj, n in (('query', 'q', h), ('key', 'k', kv),
                          ('value', 'v', kv)):
      t.append(linear(f'{hf}self_attn.{proj}_proj.weight',
                      f'{kd}attn/{name}/kernel', (n * hd, d), (d, n, hd)))
      if kw['qkv_bias']:
        t.append(reshape(f'{hf}self_attn.{proj}_proj.bias',
                         f'{kd}attn/{name}/bias', (n * hd,), (n, hd)))
    t.append(linear(f'{hf}self_attn.o_proj.weight', f'{kd}attn/out/kernel',
                    (d, h * hd), (h, hd, d)))
    if kw['out_bias']:
      t.append(copy(f'{hf}self_attn.o_proj.bias', f'{kd}attn/out/bias', (d,)))
    if kw['qk_norm']:
      t += [copy(f'{hf}self_attn.q_norm.weight', f'{kd}attn/query_norm/scale',
                 (hd,), plus),
            copy(f'{hf}self_attn.k_norm.weight', f'{kd}attn/key_norm/scale',
                 (hd,), plus)]
    if kw['post_norms']:
      t += [copy(f'{hf}post_attention_layernorm.weight',
                 f'{kd}post_attn_norm/scale', (d,), plus),
            copy(f'{hf}pre_feedforward_layernorm.weight',
                 f'{kd}mlp_norm/scale', (d,), plus),
            copy(f'{hf}post_feedforward_layernorm.weight',
                 f'{kd}post_mlp_norm/scale', (d,), plus)]
    else:
      t.append(copy(f'{hf}post_attention_layernorm.weight',
                    f'{kd}mlp_norm/scale', (d,)))
    for name, shape in (('gate', (m, d)), ('up', (m, d)), ('down', (d, m))):
      t.append(linear(f'{hf}mlp.{name}_proj.weight', f'{kd}mlp/{name}/kernel',
                      shape, shape[::-1]))
      if kw['mlp_bias']:
        t.append(copy(f'{hf}mlp.{name}_proj.bias', f'{kd}mlp/{name}/bias',
                      shape[:1]))
  t.append(copy('model.norm.weight', 'final_norm/scale', (d,), plus))
  if not kw['tied']:
    t.append(linear('lm_head.weight', 'head/kernel', (vocab, d), (d, vocab)))
  return t


def _tied_head(embedding: str):
  return lambda kw: {'lm_head.weight': embedding} if kw.get('tied', True) \
      else {}


# transformers' class defaults of the keys read (for configs that omit one).
_LLAMA = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008,
              num_hidden_layers=32, num_attention_heads=32,
              max_position_embeddings=2048, rms_norm_eps=1e-6,
              tie_word_embeddings=False, rope_theta=10_000.0)
_MISTRAL = dict(_LLAMA, intermediate_size=14336, num_key_value_heads=8,
                max_position_embeddings=4096 * 32, sliding_window=4096)
_QWEN2 = dict(_LLAMA, vocab_size=151936, intermediate_size=22016,
              max_position_embeddings=32768)
_QWEN3 = dict(_QWEN2, head_dim=128)
_GEMMA2 = dict(_LLAMA, vocab_size=256000, hidden_size=2304,
               intermediate_size=9216, num_hidden_layers=26,
               num_attention_heads=8, num_key_value_heads=4, head_dim=256,
               max_position_embeddings=8192, tie_word_embeddings=True,
               query_pre_attn_scalar=256, sliding_window=4096,
               final_logit_softcapping=30.0, attn_logit_softcapping=50.0)
_GPT2 = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12,
             n_head=12, n_inner=None, activation_function='gelu_new',
             layer_norm_epsilon=1e-5, tie_word_embeddings=True,
             scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False,
             add_cross_attention=False)
_OLD_BUFFERS = (r'^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$',)


def _gemma2(hf: dict) -> tuple[str, dict, int]:
  r = Reader(hf, _GEMMA2, 'gemma2')
  _, kw, vocab = _llama_like(hf, 'gemma2', _GEMMA2, sliding='even')
  if kw['out_bias'] or kw['mlp_bias']:
    raise UnsupportedError('gemma2 config attention_bias/mlp_bias=True is '
                           'not supported; supported: False')
  attn_cap, final_cap = (r('attn_logit_softcapping'),
                         r('final_logit_softcapping'))
  kw.update(mlp='geglu', embed_scale=True, post_norms=True,
            query_scale=float(r('query_pre_attn_scalar')) ** -0.5,
            attn_softcap=float(attn_cap) if attn_cap else None,
            final_softcap=float(final_cap) if final_cap else None)
  return MODEL, kw, vocab


def _gemma2_config(kw: dict, vocab: int) -> dict:
  cfg = _llama_config(kw, vocab, 'gemma2')
  cfg.pop('hidden_act')
  # 1/sqrt(query_pre_attn_scalar): exact for the powers of 2 gemma uses.
  scalar = (kw['query_scale'] or kw['head_dim'] ** -0.5) ** -2
  cfg.update(hidden_activation='gelu_pytorch_tanh', attention_bias=False,
             query_pre_attn_scalar=round(scalar, 6),
             attn_logit_softcapping=kw['attn_softcap'],
             final_logit_softcapping=kw['final_softcap'],
             sliding_window=kw['sliding_window'] or None,
             layer_types=[
                 'sliding_attention' if kw['sliding_window'] and (
                     kw['sliding_layers'] == 'all' or i % 2 == 0)
                 else 'full_attention' for i in range(kw['num_layers'])])
  return cfg


def _gpt2(hf: dict) -> tuple[str, dict, int]:
  r = Reader(hf, _GPT2, 'gpt2')
  act = r.require('activation_function',
                  ('gelu_new', 'gelu_pytorch_tanh', 'gelu'))
  r.require('scale_attn_weights', (True,))
  r.require('scale_attn_by_inverse_layer_idx', (False,))
  r.require('add_cross_attention', (False,))
  d = r('n_embd')
  kw = dict(d_model=d, num_layers=r('n_layer'), num_heads=r('n_head'),
            num_kv_heads=r('n_head'), head_dim=d // r('n_head'),
            mlp_hidden=r('n_inner') or 4 * d,
            mlp='gelu_exact' if act == 'gelu' else 'gelu',
            tied=bool(r('tie_word_embeddings')), max_len=r('n_positions'),
            norm='layer', norm_eps=r('layer_norm_epsilon'),
            positions='learned', qkv_bias=True, out_bias=True, mlp_bias=True)
  return MODEL, kw, r('vocab_size')


def _gpt2_config(kw: dict, vocab: int) -> dict:
  return dict(model_type='gpt2', vocab_size=vocab, n_embd=kw['d_model'],
              n_layer=kw['num_layers'], n_head=kw['num_heads'],
              n_inner=kw['mlp_hidden'], n_positions=kw['max_len'],
              n_ctx=kw['max_len'],
              activation_function={'gelu': 'gelu_new',
                                   'gelu_exact': 'gelu'}.get(kw['mlp']),
              layer_norm_epsilon=kw['norm_eps'],
              tie_word_embeddings=kw['tied'], scale_attn_weights=True)


def _gpt2_table(kw: dict, vocab: int) -> list[Tensor]:
  d, h, m = kw['d_model'], kw['num_heads'], kw['mlp_hidden']
  hd = d // h
  t = [copy('transformer.wte.weight', 'embed/embedding', (vocab, d)),
       copy('transformer.wpe.weight', 'pos_embed/embedding',
            (kw['max_len'], d))]

  def norm(hf, kd):
    return [copy(f'{hf}.weight', f'{kd}/scale', (d,)),
            copy(f'{hf}.bias', f'{kd}/bias', (d,))]

  for i in range(kw['num_layers']):
    hf, kd = f'transformer.h.{i}.', f'blocks_{i}/'
    qkv = tuple(f'{kd}attn/{n}' for n in ('query', 'key', 'value'))
    t += norm(f'{hf}ln_1', f'{kd}attn_norm') + [
        split(f'{hf}attn.c_attn.weight', tuple(f'{p}/kernel' for p in qkv),
              (d, 3 * d), (d, h, hd)),
        split(f'{hf}attn.c_attn.bias', tuple(f'{p}/bias' for p in qkv),
              (3 * d,), (h, hd)),
        reshape(f'{hf}attn.c_proj.weight', f'{kd}attn/out/kernel', (d, d),
                (h, hd, d)),
        copy(f'{hf}attn.c_proj.bias', f'{kd}attn/out/bias', (d,))]
    t += norm(f'{hf}ln_2', f'{kd}mlp_norm') + [
        copy(f'{hf}mlp.c_fc.weight', f'{kd}mlp/up/kernel', (d, m)),
        copy(f'{hf}mlp.c_fc.bias', f'{kd}mlp/up/bias', (m,)),
        copy(f'{hf}mlp.c_proj.weight', f'{kd}mlp/down/kernel', (m, d)),
        copy(f'{hf}mlp.c_proj.bias', f'{kd}mlp/down/bias', (d,))]
  t += norm('transformer.ln_f', 'final_norm')
  if not kw['tied']:
    t.append(linear('lm_head.weight', 'head/kernel', (vocab, d), (d, vocab)))
  return t


def _architectures(model_type: str, architecture: str, kd_config):
  """`kd_config` refusing a config whose `architectures` names another head
  than the LM's (a classifier's `score` would not be a kd LM's head); the
  base model (`LlamaModel`, `GPT2Model`) is fine."""
  base = re.sub(r'(ForCausalLM|LMHeadModel)$', 'Model', architecture)

  def read(hf: dict):
    other = [a for a in hf.get('architectures') or ()
             if a not in (architecture, base)]
    if other:
      raise UnsupportedError(
          f'{model_type} config architectures {other} are not supported; '
          f'supported: {architecture} (or {base}): a language model with '
          'its LM head')
    return kd_config(hf)
  return read


def _family(model_type, architecture, kd_config, hf_config, table=None,
            **extra):
  hf_table.register(Family(
      model_type, architecture, MODEL,
      _architectures(model_type, architecture, kd_config),
      lambda kw, vocab: hf_config(complete(kw), vocab),
      lambda kw, vocab: (table or _decoder_table)(complete(kw), vocab),
      **extra))


_LLAMA_EXTRA = dict(prefixes=('model.',), dropped=_OLD_BUFFERS,
                    duplicates=_tied_head('model.embed_tokens.weight'))
for _type, _arch, _defaults, _opts in (
    ('llama', 'LlamaForCausalLM', _LLAMA, {}),
    ('mistral', 'MistralForCausalLM', _MISTRAL, dict(sliding='all')),
    ('qwen2', 'Qwen2ForCausalLM', _QWEN2, dict(qkv_bias=True)),
    ('qwen3', 'Qwen3ForCausalLM', _QWEN3, dict(qk_norm=True))):
  _family(_type, _arch,
          lambda hf, t=_type, d=_defaults, o=_opts: _llama_like(hf, t, d, **o),
          lambda kw, vocab, t=_type: _llama_config(kw, vocab, t),
          **_LLAMA_EXTRA)
_family('gemma2', 'Gemma2ForCausalLM', _gemma2, _gemma2_config,
        **_LLAMA_EXTRA)
_family('gpt2', 'GPT2LMHeadModel', _gpt2, _gpt2_config, _gpt2_table,
        prefixes=('transformer.',),
        dropped=(r'^transformer\.h\.\d+\.attn\.(masked_)?bias$',),
        duplicates=_tied_head('transformer.wte.weight'))
