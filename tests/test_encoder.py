"""The transformer encoder (BERT / DistilBERT) against a NumPy reference."""
import math

import jax
import numpy as np
import pytest

from kd import models

V, T, D, H = 37, 7, 16, 4
SIZES = dict(d_model=D, num_layers=2, num_heads=H, mlp_hidden=24, max_len=12)
# post: BERT with token types and a tanh pooler; distil: DistilBERT's shape
# (no token types, relu pre_classifier); pre: pre-LN with GELU-tanh.
CONFIGS = {
    'post': dict(num_labels=3),
    'distil': dict(type_vocab_size=0, num_labels=2, pooler_activation='relu'),
    'pre': dict(norm='pre', mlp='gelu', norm_eps=1e-5),
}


def _gelu(x, exact=True):
  if exact:
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
  return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) *
                                (x + 0.044715 * x ** 3)))


def _ln(x, p, eps):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * p['scale'] + p['bias']


def _dense(x, p):
  return x @ p['kernel'] + p['bias']


def reference(params, kw, tokens, mask=None, types=None):
  """BERT's forward (transformers' BertForMaskedLM, in NumPy, float64)."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  eps, pre = kw.get('norm_eps', 1e-12), kw.get('norm') == 'pre'
  act = lambda x: _gelu(x, kw.get('mlp', 'gelu_exact') == 'gelu_exact')
  b, t = tokens.shape
  x = p['embed']['embedding'][tokens] + p['pos_embed']['embedding'][:t]
  if kw.get('type_vocab_size', 2):
    x = x + p['type_embed']['embedding'][
        np.zeros_like(tokens) if types is None else types]
  x = _ln(x, p['embed_norm'], eps)
  mask = np.ones((b, t), bool) if mask is None else mask.astype(bool)
  hidden, probs_all = [x], []
  for i in range(SIZES['num_layers']):
    blk = p[f'blocks_{i}']
    a = blk['attn']

    def attention(y):
      q, k, v = (np.einsum('btd,dhe->bthe', y, a[n]['kernel']) + a[n]['bias']
                 for n in ('query', 'key', 'value'))
      s = np.einsum('bshe,blhe->bhsl', q, k) / math.sqrt(D // H)
      s = np.where(mask[:, None, None, :], s, -1e30)
      s = np.exp(s - s.max(-1, keepdims=True))
      probs = s / s.sum(-1, keepdims=True)
      o = np.einsum('bhsl,blhe->bshe', probs, v)
      return (np.einsum('bshe,hed->bsd', o, a['out']['kernel']) +
              a['out']['bias'], probs)

    mlp = lambda y: _dense(act(_dense(y, blk['mlp']['up'])),
                           blk['mlp']['down'])
    if pre:
      y, probs = attention(_ln(x, blk['attn_norm'], eps))
      x = x + y
      x = x + mlp(_ln(x, blk['mlp_norm'], eps))
    else:
      y, probs = attention(x)
      x = _ln(x + y, blk['attn_norm'], eps)
      x = _ln(x + mlp(x), blk['mlp_norm'], eps)
    hidden.append(x)
    probs_all.append(probs)
  if pre:
    x = _ln(x, p['final_norm'], eps)
  h = _ln(act(_dense(x, p['mlm']['transform'])), p['mlm']['norm'], eps)
  logits = h @ p['embed']['embedding'].T + p['mlm']['bias']
  cls = None
  if kw.get('num_labels'):
    pooled = _dense(x[:, 0], p['pooler'])
    pooled = (np.maximum(pooled, 0) if kw.get('pooler_activation') == 'relu'
              else np.tanh(pooled))
    cls = _dense(pooled, p['classifier'])
  return logits, hidden, probs_all, cls


def _noisy(variables, seed=1):
  """Every parameter (LayerNorm scales, biases) perturbed, so that a swapped
  or ignored one changes the output."""
  leaves, tree = jax.tree.flatten(variables)
  rng = np.random.default_rng(seed)
  return jax.tree.unflatten(tree, [
      np.asarray(x) + rng.normal(0, 0.3, x.shape).astype(np.float32)
      for x in leaves])


def _tokens(b=2, seed=0):
  return np.random.default_rng(seed).integers(0, V, (b, T)).astype(np.int32)


@pytest.fixture(scope='module', params=sorted(CONFIGS))
def setup(request):
  kw = dict(SIZES, **CONFIGS[request.param])
  model = models.create('transformer_encoder', V, return_attention=True, **kw)
  variables = _noisy(model.init(jax.random.key(0), _tokens(1)))
  return model, variables, kw


def test_matches_numpy_reference(setup):
  model, variables, kw = setup
  x = _tokens()
  mask = np.ones((2, T), np.int32)
  mask[1, 4:] = 0  # Padding at the end of the second row.
  types = (np.arange(T)[None] >= 3).astype(np.int32).repeat(2, 0)
  types = types if kw.get('type_vocab_size', 2) else None
  logits, feats = model.apply(variables, x, attention_mask=mask,
                              token_types=types)
  ref, hidden, probs, cls = reference(variables['params'], kw, x, mask, types)
  assert logits.shape == (2, T, V) and logits.dtype == np.float32
  np.testing.assert_allclose(logits, ref, atol=2e-4, rtol=1e-4)
  for i, h in enumerate(hidden):
    np.testing.assert_allclose(feats[f'hidden{i}'], h, atol=1e-4, rtol=1e-4)
    np.testing.assert_array_equal(feats[f'stage{i}'], feats[f'hidden{i}'])
  for i, pr in enumerate(probs):
    assert feats[f'attn{i}'].shape == (2, H, T, T)
    np.testing.assert_allclose(feats[f'attn{i}'], pr, atol=1e-5)
  assert np.all(np.asarray(feats['attn0'])[1, :, :, 4:] == 0)
  if kw.get('num_labels'):
    assert feats['cls_logits'].shape == (2, kw['num_labels'])
    np.testing.assert_allclose(feats['cls_logits'], cls, atol=1e-4)
  else:
    assert 'cls_logits' not in feats
  assert feats['embedding'].shape == (2, T, D)


def test_bidirectional_and_padding():
  model = models.create('transformer_encoder', V, **SIZES)
  variables = _noisy(model.init(jax.random.key(0), _tokens(1)))
  x = _tokens()
  fwd = jax.jit(lambda x, m: model.apply(variables, x, attention_mask=m)[0])
  ones = np.ones((2, T), np.int32)
  base = fwd(x, ones)
  # A later token changes earlier positions' logits (not causal).
  y = x.copy()
  y[:, -1] = (y[:, -1] + 1) % V
  assert not np.allclose(fwd(y, ones)[:, 0], base[:, 0])
  # Behind the mask, it changes nothing at the real positions.
  mask = ones.copy()
  mask[:, -1] = 0
  np.testing.assert_allclose(fwd(y, mask)[:, :-1], fwd(x, mask)[:, :-1],
                             atol=1e-6)
  assert not np.allclose(fwd(x, mask)[:, :-1], base[:, :-1])


def test_parameter_count_of_distilbert_and_bert_base():
  """DistilBertForMaskedLM (distilbert-base-uncased) and BertForMaskedLM
  (bert-base-uncased): transformers' counts, tied decoder counted once."""
  def count(**kw):
    m = models.create('transformer_encoder', 30522, d_model=768,
                      num_heads=12, **kw)
    shapes = jax.eval_shape(lambda: m.init(jax.random.key(0),
                                           np.zeros((1, 4), np.int32)))
    return sum(math.prod(a.shape) for a in jax.tree.leaves(shapes))
  assert count(num_layers=6, type_vocab_size=0) == 66_985_530
  assert count(num_layers=12) == 109_514_298


def test_bad_options_and_inputs():
  x = _tokens()
  for kw, message in ((dict(norm='sandwich'), "unknown norm 'sandwich'"),
                      (dict(mlp='swiglu'), "unknown mlp 'swiglu'"),
                      (dict(num_heads=5), 'not a multiple of num_heads')):
    with pytest.raises(ValueError, match=message):
      models.create('transformer_encoder', V, **dict(SIZES, **kw)).init(
          jax.random.key(0), x)
  model = models.create('transformer_encoder', V, **SIZES)
  with pytest.raises(ValueError, match='exceeds the model context max_len=12'):
    model.init(jax.random.key(0), np.zeros((1, 13), np.int32))
  distil = models.create('transformer_encoder', V, type_vocab_size=0, **SIZES)
  with pytest.raises(ValueError, match='type_vocab_size=0'):
    distil.init(jax.random.key(0), x, token_types=np.zeros_like(x))
