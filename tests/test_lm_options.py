"""TransformerLM's options (the HF decoder families' math) against NumPy
references of their formulas, the KV cache with every option, the counts,
and the refusals. (Parity with transformers' own logits: test_convert_hf.)"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from kd import models
from kd import sampling as gen
from kd.models import lm, transformer

V = 67
SMALL = dict(d_model=16, num_layers=3, num_heads=4, num_kv_heads=2,
             mlp_hidden=24, max_len=24)
# Families in miniature: every option on in one model or another.
OPTIONS = {
    'default': {},
    'gpt2': dict(norm='layer', norm_eps=1e-5, positions='learned', mlp='gelu',
                 qkv_bias=True, out_bias=True, mlp_bias=True),
    'gemma2': dict(mlp='geglu', head_dim=6, sliding_window=3,
                   sliding_layers='even', attn_softcap=2.0, final_softcap=3.0,
                   query_scale=0.3, embed_scale=True, post_norms=True),
    'qwen3_llama3': dict(qk_norm=True, qkv_bias=True, head_dim=8, tied=False,
                         rope_base=500.0, rope_scaling=dict(
                             rope_type='llama3', factor=8.0,
                             low_freq_factor=1.0, high_freq_factor=4.0,
                             original_max_position_embeddings=8)),
}


def _tokens(b=2, t=12, seed=0):
  return np.random.default_rng(seed).integers(0, V, (b, t)).astype(np.int32)


def _random_params(module, *inputs, seed=3, **kw):
  """Every parameter random (norm scales and biases too), so a misplaced one
  shows (shapes by jax.eval_shape: no initialisation to compile)."""
  shapes = jax.eval_shape(functools.partial(module.init, **kw),
                          jax.random.key(0), *inputs)['params']
  leaves, tree = jax.tree.flatten(shapes)
  rng = np.random.default_rng(seed)
  return jax.tree.unflatten(tree, [
      rng.normal(0.0, 0.5, x.shape).astype(np.float32) for x in leaves])


def _model(name, **over):
  return models.create('transformer_lm', V, **{**SMALL, **OPTIONS[name],
                                                **over})


# NumPy references (float64), written from the papers / transformers.
def np_llama3_frequencies(dim, base, factor, low_freq_factor,
                          high_freq_factor, old_context_len):
  """Meta's apply_scaling (llama3.1 reference code), line for line."""
  freqs = 1.0 / (base ** (np.arange(0, dim, 2)[: dim // 2] / dim))
  low_freq_wavelen = old_context_len / low_freq_factor
  high_freq_wavelen = old_context_len / high_freq_factor
  new_freqs = []
  for freq in freqs:
    wavelen = 2 * math.pi / freq
    if wavelen < high_freq_wavelen:
      new_freqs.append(freq)
    elif wavelen > low_freq_wavelen:
      new_freqs.append(freq / factor)
    else:
      smooth = (old_context_len / wavelen - low_freq_factor) / (
          high_freq_factor - low_freq_factor)
      new_freqs.append((1 - smooth) * freq / factor + smooth * freq)
  return np.array(new_freqs)


def np_norm(x, p, eps):
  if 'bias' in p:  # LayerNorm.
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p['scale'] + p['bias']
  return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps) * p['scale']


def np_gelu_tanh(x):
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def np_dense(x, p, contract=1):
  """x [..., in...] . kernel [in..., out...] + bias."""
  k = p['kernel']
  y = np.tensordot(x, k, axes=(list(range(x.ndim - contract, x.ndim)),
                               list(range(contract))))
  return y + p['bias'] if 'bias' in p else y


def np_rope(x, positions, freq):
  """x [T, H, D] at positions [T]: rotate_half form."""
  angle = positions[:, None, None] * freq
  x1, x2 = np.split(x, 2, axis=-1)
  return np.concatenate([x1 * np.cos(angle) - x2 * np.sin(angle),
                         x2 * np.cos(angle) + x1 * np.sin(angle)], -1)


def np_attention(p, x, model, window):
  """One sequence x [T, d]: softmax(mask(softcap(q k^T * scale))) v."""
  t, d = x.shape[0], model.head_size
  q, k, v = (np_dense(x, p[n]) for n in ('query', 'key', 'value'))
  if model.qk_norm:
    q = np_norm(q, p['query_norm'], model.norm_eps)
    k = np_norm(k, p['key_norm'], model.norm_eps)
  if model.positions == 'rope':
    if model.rope_scaling:
      s = model.rope_scaling
      freq = np_llama3_frequencies(
          d, model.rope_base, s['factor'], s['low_freq_factor'],
          s['high_freq_factor'], s['original_max_position_embeddings'])
    else:
      freq = model.rope_base ** (-np.arange(d // 2) / (d // 2))
    q, k = np_rope(q, np.arange(t), freq), np_rope(k, np.arange(t), freq)
  group = model.num_heads // model.kv_heads
  scale = model.query_scale or 1 / np.sqrt(d)
  heads = []
  for h in range(model.num_heads):
    scores = q[:, h] @ k[:, h // group].T * scale
    if model.attn_softcap:
      scores = model.attn_softcap * np.tanh(scores / model.attn_softcap)
    i, j = np.mgrid[:t, :t]
    seen = (j <= i) & ((i - j < window) if window else True)
    scores = np.where(seen, scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    heads.append(probs / probs.sum(-1, keepdims=True) @ v[:, h // group])
  return np_dense(np.stack(heads, 1), p['out'], contract=2)


def np_mlp(p, x, kind):
  if kind in ('swiglu', 'geglu'):
    gate = np_dense(x, p['gate'])
    act = gate / (1 + np.exp(-gate)) if kind == 'swiglu' else np_gelu_tanh(
        gate)
    return np_dense(act * np_dense(x, p['up']), p['down'])
  return np_dense(np_gelu_tanh(np_dense(x, p['up'])), p['down'])


def np_lm(params, tokens, model):
  """Logits [T, V] of one sequence, from the formulas."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  eps = model.norm_eps
  x = p['embed']['embedding'][tokens]
  if model.embed_scale:
    x = x * np.sqrt(model.d_model)
  if model.positions == 'learned':
    x = x + p['pos_embed']['embedding'][np.arange(len(tokens))]
  for i in range(model.num_layers):
    b = p[f'blocks_{i}']
    y = np_attention(b['attn'], np_norm(x, b['attn_norm'], eps), model,
                     model.layer_window(i))
    if model.post_norms:
      y = np_norm(y, b['post_attn_norm'], eps)
    x = x + y
    y = np_mlp(b['mlp'], np_norm(x, b['mlp_norm'], eps), model.mlp)
    if model.post_norms:
      y = np_norm(y, b['post_mlp_norm'], eps)
    x = x + y
  x = np_norm(x, p['final_norm'], eps)
  logits = (x @ p['embed']['embedding'].T if model.tied
            else x @ p['head']['kernel'])
  if model.final_softcap:
    logits = model.final_softcap * np.tanh(logits / model.final_softcap)
  return logits


@pytest.mark.parametrize('name', sorted(OPTIONS))
def test_the_model_equals_the_formulas(name):
  model = _model(name)
  params = _random_params(model, _tokens(1, 4))
  x = _tokens(1, 12)
  got = np.asarray(jax.jit(model.apply)({'params': params}, x)[0][0])
  want = np_lm(params, x[0], model)
  np.testing.assert_allclose(got, want, atol=2e-4 * max(1, np.abs(want).max()))
  if model.final_softcap:
    assert np.abs(got).max() < model.final_softcap


def test_llama3_frequencies_are_the_published_formula():
  scaling = OPTIONS['qwen3_llama3']['rope_scaling']
  for dim, base, context in ((8, 500.0, 8), (64, 500_000.0, 8192),
                             (128, 500_000.0, 8192)):
    s = dict(scaling, original_max_position_embeddings=context)
    want = np_llama3_frequencies(dim, base, 8.0, 1.0, 4.0, context)
    got = transformer.rope_frequencies(dim, base, s)
    np.testing.assert_allclose(got, want, rtol=2e-6)
    # Each of the three regions occurs for Llama 3's sizes.
    if dim == 128:
      plain = base ** (-np.arange(64) / 64)
      ratio = np.asarray(got) / plain
      assert np.isclose(ratio, 1).any() and np.isclose(ratio, 1 / 8).any()
      assert ((ratio < 0.99) & (ratio > 0.126)).any()


def test_sliding_window_mask_and_softcap():
  got = transformer.attention_mask(jnp.arange(6), jnp.arange(6), window=3)
  want = [[j <= i and j > i - 3 for j in range(6)] for i in range(6)]
  np.testing.assert_array_equal(got, want)
  # A cache: queries at slots 4, 5 over 8 slots.
  got = transformer.attention_mask(4 + jnp.arange(2), jnp.arange(8), window=2)
  np.testing.assert_array_equal(got, [[0, 0, 0, 1, 1, 0, 0, 0],
                                      [0, 0, 0, 0, 1, 1, 0, 0]])
  np.testing.assert_array_equal(
      transformer.attention_mask(jnp.arange(3), jnp.arange(3), causal=False),
      np.ones((3, 3), bool))
  x = jnp.array([-100.0, -1.0, 0.0, 0.5, 100.0])
  np.testing.assert_allclose(transformer.softcap(x, 2.0),
                             2 * np.tanh(np.asarray(x) / 2), rtol=1e-6)


def test_mlp_kinds_and_layer_norm():
  x = np.random.default_rng(1).normal(size=(2, 5, 8)).astype(np.float32)
  for kind in transformer.MLPS:
    mlp = transformer.MLP(12, kind, bias=True)
    p = _random_params(mlp, x)
    got = mlp.apply({'params': p}, x)
    if kind == 'gelu_exact':
      up = np_dense(x.astype(np.float64), p['up'])
      erf = np.vectorize(math.erf)
      want = np_dense(0.5 * up * (1 + erf(up / np.sqrt(2))), p['down'])
    else:
      want = np_mlp(p, x.astype(np.float64), kind)
    np.testing.assert_allclose(got, want, atol=1e-4, err_msg=kind)
  norm = transformer.make_norm('layer', 1e-5, jnp.float32)
  p = _random_params(norm, x)
  np.testing.assert_allclose(norm.apply({'params': p}, 100 + x),
                             np_norm(100 + x.astype(np.float64), p, 1e-5),
                             atol=1e-4)


def test_bidirectional_attention_with_a_key_mask():
  attn = transformer.Attention(2, 1, 4, causal=False, rotary=False,
                               qkv_bias=True)
  x = np.random.default_rng(2).normal(size=(2, 5, 8)).astype(np.float32)
  keys = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
  v = {'params': _random_params(attn, x, None, key_mask=keys)}
  _, probs, _ = attn.apply(v, x, None, None, True, key_mask=keys)
  np.testing.assert_array_equal(np.asarray(probs[0])[..., 3:], 0)
  assert np.all(np.asarray(probs[1]) > 0)  # Later keys seen: bidirectional.
  # Masked keys change nothing.
  y = x.copy()
  y[0, 3:] = 7.0
  np.testing.assert_allclose(attn.apply(v, y, None, key_mask=keys)[0][0, :3],
                             attn.apply(v, x, None, key_mask=keys)[0][0, :3],
                             atol=1e-6)


def test_defaults_keep_the_parameter_tree():
  model = models.create('transformer_lm', V, d_model=16, num_layers=1,
                        num_heads=4)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                             _tokens(1, 4)))['params']
  paths = {jax.tree_util.keystr(p): s.shape
           for p, s in jax.tree_util.tree_leaves_with_path(shapes)}
  b = "['blocks_0']"
  assert paths == {
      "['embed']['embedding']": (V, 16), "['final_norm']['scale']": (16,),
      f"{b}['attn_norm']['scale']": (16,), f"{b}['mlp_norm']['scale']": (16,),
      **{f"{b}['attn']['{n}']['kernel']": (16, 4, 4)
         for n in ('query', 'key', 'value')},
      f"{b}['attn']['out']['kernel']": (4, 4, 16),
      f"{b}['mlp']['gate']['kernel']": (16, 48),
      f"{b}['mlp']['up']['kernel']": (16, 48),
      f"{b}['mlp']['down']['kernel']": (48, 16)}
  assert model.head_size == 4


@pytest.fixture(scope='module')
def every_option():
  """Sliding window on alternate layers, both softcaps, learned positions,
  LayerNorm, biases, q/k norm and post norms in one model."""
  model = _model('gemma2', positions='learned', norm='layer', qk_norm=True,
                 qkv_bias=True, out_bias=True, mlp_bias=True,
                 sliding_window=4)
  params = _random_params(model, _tokens(1, 4))
  return model, {'params': params}


def test_extend_step_by_step_equals_the_full_forward(every_option):
  model, variables = every_option
  x = _tokens(2, 14)
  full = jax.jit(model.apply)(variables, x)[0]
  # The window must matter for this check to mean anything.
  wide = jax.jit(model.clone(sliding_window=None).apply)(variables, x)[0]
  assert np.abs(np.asarray(full - wide)).max() > 1e-2
  extend = jax.jit(functools.partial(model.apply, variables,
                                     method=model.extend))
  logits, cache = extend(x[:, :5], lm.init_cache(model, 2, 16))
  got = [logits]
  for t in range(5, 14):
    logits, cache = extend(x[:, t:t + 1], cache)
    got.append(logits)
  assert cache['k'].shape == (3, 2, 16, 2, 6)
  np.testing.assert_allclose(np.concatenate(got, 1), full, atol=1e-5)


def test_generation_honours_every_option(every_option):
  """Greedy decoding of left-aligned prompts of different lengths (kd's
  sampler) equals greedy decoding by recomputing the whole sequence."""
  model, variables = every_option
  n, p = 6, 7
  lengths = np.array([7, 2], np.int32)
  prompts = _tokens(2, p, seed=5)
  tokens, _ = jax.jit(functools.partial(
      gen.generate, model, variables, max_new_tokens=n, pad_id=0))(
          prompts, lengths, jax.random.key(0))
  forward = jax.jit(lambda t: model.apply(variables, t)[0])
  for b, length in enumerate(lengths):
    seq = list(prompts[b, :length])
    for _ in range(n):
      logits = forward(np.array([seq + [0] * (p + n - len(seq))], np.int32))
      seq.append(int(np.argmax(logits[0, len(seq) - 1])))
    np.testing.assert_array_equal(tokens[b, :length + n], seq)


@pytest.mark.parametrize('name', sorted(OPTIONS))
def test_parameter_count_formula(name):
  model = _model(name)
  o = {k: v for k, v in OPTIONS[name].items()
       if k in ('head_dim', 'norm', 'positions', 'qkv_bias', 'out_bias',
                'mlp_bias', 'qk_norm', 'post_norms')}
  formula = lm.lm_param_count(V, 16, 3, 4, 2, 24, model.mlp, model.tied,
                              max_len=24, **o)
  assert lm.param_count(model) == formula


def test_published_parameter_counts():
  gpt2 = models.create('transformer_lm', 50257, d_model=768, num_layers=12,
                       num_heads=12, mlp='gelu', max_len=1024, norm='layer',
                       positions='learned', qkv_bias=True, out_bias=True,
                       mlp_bias=True)
  assert lm.param_count(gpt2) == 124_439_808
  assert lm.lm_param_count(50257, 768, 12, 12, 12, 3072, 'gelu', True,
                           norm='layer', positions='learned', max_len=1024,
                           qkv_bias=True, out_bias=True,
                           mlp_bias=True) == 124_439_808
  llama = models.create('transformer_lm', 128256, d_model=2048,
                        num_layers=16, num_heads=32, num_kv_heads=8,
                        mlp_hidden=8192, max_len=131072, rope_base=500000.0,
                        rope_scaling=OPTIONS['qwen3_llama3']['rope_scaling'])
  assert lm.param_count(llama) == 1_235_814_400


@pytest.mark.parametrize('option, value, match', [
    ('mlp', 'relu', r"unknown mlp 'relu'; valid: \('swiglu', 'gelu', "
                    r"'geglu', 'gelu_exact'\)"),
    ('norm', 'batch', r"unknown norm 'batch'; valid: \('rms', 'layer'\)"),
    ('positions', 'alibi', r"unknown positions 'alibi'; valid: \('rope', "
                           r"'learned'\)"),
    ('sliding_layers', 'odd', r"unknown sliding_layers 'odd'; valid: "
                              r"\('all', 'even'\)"),
    ('rope_scaling', {'rope_type': 'yarn', 'factor': 4.0},
     r"unsupported rope_scaling type 'yarn'; valid: \('llama3',\)"),
    ('rope_scaling', {'rope_type': 'llama3', 'factor': 8.0},
     r"rope_scaling of type llama3 lacks \['low_freq_factor', "
     r"'high_freq_factor', 'original_max_position_embeddings'\]"),
    ('sliding_window', 0, 'sliding_window=0 must be positive'),
])
def test_an_option_kd_cannot_honour_is_refused(option, value, match):
  with pytest.raises(ValueError, match=match):
    models.create('transformer_lm', V, **{option: value})


def test_onnx_export_honours_every_option(every_option):
  """kd.export's prefill / decode graphs (the cache as inputs and outputs)
  and the logits graph equal the JAX forward."""
  from kd.export import onnx  # pylint: disable=import-outside-toplevel
  model, variables = every_option
  graphs = onnx.ONNXLM(onnx.convert_lm(model, variables, seq_len=12,
                                       prompt_len=6, cache_len=12))
  tokens = _tokens(1, 12, seed=7)[0]
  full = np.asarray(jax.jit(model.apply)(variables, tokens[None])[0][0])
  np.testing.assert_allclose(graphs.logits(tokens), full, atol=1e-4)
  logits, cache = graphs.prefill(tokens[:6])
  np.testing.assert_allclose(logits, full[:6], atol=1e-4)
  for t in range(6, 12):
    logits, cache = graphs.decode(int(tokens[t]), t, cache)
    np.testing.assert_allclose(logits, full[t], atol=1e-4)


def test_sharding_rules_of_the_new_parameters():
  """Biases split like their kernels' outputs; a q/k norm spans a head
  (unsplit, as the head dimension of q and k)."""
  from kd import sharding  # pylint: disable=import-outside-toplevel
  axes = lambda path, ndim: sharding.logical_axes(f'params/{path}', ndim,
                                                  sharding.RULES)
  assert axes('blocks_0/attn/query/bias', 2) == ('heads', 'kv')
  assert axes('blocks_0/attn/value/bias', 2) == ('heads', 'kv')
  assert axes('blocks_0/mlp/gate/bias', 1) == ('mlp',)
  assert axes('blocks_0/attn/key_norm/scale', 1) == ('kv',)
  assert axes('blocks_0/post_mlp_norm/scale', 1) == ('embed',)
  assert axes('pos_embed/embedding', 2) == ('vocab', 'embed')
  assert sharding.partition_spec((8,), ('kv',), {'data': 1, 'fsdp': 2,
                                                 'tensor': 2}) == P()
