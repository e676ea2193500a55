"""kd.prune of transformer_encoder (BERT layout): units made useless rank
last, padding is not scored, pruning to the full size is the same function,
the pruned encoder equals the full one with the pruned heads and neurons
zeroed (its masked-LM and [CLS] heads), an identity block is dropped, and
heads and embed shrink together (the head size is d_model / heads)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd import models, prune
from kd.prune import transformer
from tests.prune_checks import set_leaf

V = 11
ENC = dict(d_model=24, num_layers=3, num_heads=4, mlp_hidden=20, max_len=16,
           num_labels=3, pad_id=0)
PRE = dict(ENC, norm='pre')
NAME = 'transformer_encoder'


def _setup(kwargs, seed=0):
  model = models.create(NAME, V, **kwargs)
  x = jax.random.randint(jax.random.key(seed + 1), (6, 12), 1, V)
  x = x.at[1, 8:].set(0).at[4, 5:].set(0)  # Padding (pad_id 0).
  variables = model.init(jax.random.key(seed), x)
  params = jax.tree_util.tree_map_with_path(  # Norms unlike each other.
      lambda p, v: v * (1 + 0.3 * jax.random.normal(jax.random.key(7),
                                                    v.shape))
      if 'scale' in jax.tree_util.keystr(p) else v, variables['params'])
  loss_mask = (jax.random.uniform(jax.random.key(3), x.shape) < 0.5) & (x > 0)
  return model, {'params': params}, [{'image': x, 'label': x,
                                       'mask': loss_mask.astype(jnp.float32)}]


def _logits(kwargs, variables, x):
  logits, feats = models.create(NAME, V, **kwargs).apply(variables, x)
  return logits, feats['cls_logits']


def test_units_made_useless_rank_last_and_padding_is_not_scored():
  model, v, batches = _setup(ENC)
  p = v['params']
  for leaf in ('kernel', 'bias'):  # Head 1 of layer 2, neuron 3 of layer 0.
    p = set_leaf(p, f'blocks_2/attn/value/{leaf}', lambda w: (
        w.at[..., 1, :].set(0) if w.ndim == 3 else w.at[1].set(0)))
    p = set_leaf(p, f'blocks_0/mlp/up/{leaf}', lambda w: w.at[..., 3].set(0))
    p = set_leaf(p, f'pooler/{leaf}', lambda w: w.at[..., 4].set(0))
  for norm in ('embed_norm', 'blocks_0/attn_norm', 'blocks_0/mlp_norm',
               'blocks_1/attn_norm', 'blocks_1/mlp_norm', 'blocks_2/attn_norm',
               'blocks_2/mlp_norm', 'mlm/norm'):
    for leaf in ('scale', 'bias'):
      p = set_leaf(p, f'{norm}/{leaf}', lambda w: w.at[5].set(0))
  s = transformer.width_scores(model, {'params': p}, batches, NAME)
  assert s.heads[2][1] == 0 and np.all(np.delete(s.heads[2], 1) > 0)
  assert s.mlp[0][3] == 0 and np.all(np.delete(s.mlp[0], 3) > 0)
  assert s.embed[5] == 0 and np.all(np.delete(s.embed, 5) > 0)
  assert s.pooler[4] == 0 and np.all(np.delete(s.pooler, 4) > 0)
  # The pad token's embedding reaches only the padded positions (their
  # keys are masked): the scores do not change with it.
  q = set_leaf(p, 'embed/embedding', lambda w: w.at[0].set(5.0))
  s2 = transformer.width_scores(model, {'params': q}, batches, NAME)
  for a, b in ((s.heads[1], s2.heads[1]), (s.mlp[2], s2.mlp[2]),
               (s.embed, s2.embed)):
    np.testing.assert_allclose(a, b, rtol=1e-5)
  pruned = prune.prune(NAME, ENC, V, {'params': p}, batches,
                       'heads:3,embed:18,mlp:19')
  kept = pruned.variables['params']
  assert pruned.kwargs == dict(ENC, num_heads=3, d_model=18, mlp_hidden=19)
  assert kept['blocks_2']['attn']['value']['kernel'].shape == (18, 3, 6)
  assert kept['mlm']['transform']['kernel'].shape == (18, 18)
  pooled = np.sort(np.argsort(-s.pooler, kind='stable')[:18])
  assert 4 not in pooled
  np.testing.assert_array_equal(  # d_model wide: its own 18 best outputs.
      kept['classifier']['kernel'],
      np.asarray(p['classifier']['kernel'])[pooled])
  logits, cls_logits = _logits(pruned.kwargs, pruned.variables,
                               batches[0]['image'])
  assert logits.shape == (6, 12, V) and cls_logits.shape == (6, 3)
  channels = np.sort(np.argsort(-s.embed, kind='stable')[:18])
  assert 5 not in channels
  np.testing.assert_array_equal(kept['type_embed']['embedding'],
                                np.asarray(p['type_embed']['embedding'])[
                                    :, channels])


@pytest.mark.parametrize('kwargs', [ENC, PRE])
def test_full_size_is_the_same_function_and_pruned_equals_zeroed(kwargs):
  model, v, batches = _setup(kwargs)
  x = batches[0]['image']
  full = prune.prune(NAME, kwargs, V, v, batches,
                     'heads:1.0,mlp:1.0,embed:1.0', 'keep:3,by:loss')
  assert full.kwargs == kwargs
  for a, b in zip(_logits(kwargs, full.variables, x), _logits(kwargs, v, x)):
    np.testing.assert_array_equal(a, b)
  # Neurons (heads go with embedding channels here, and a LayerNorm over
  # fewer channels is another function).
  p = prune.prune(NAME, kwargs, V, v, batches, 'mlp:0.5')
  assert p.kwargs == dict(kwargs, mlp_hidden=10)
  zeroed = v['params']
  for l in range(3):
    drop = np.setdiff1d(np.arange(20), transformer.kept_units(
        p.scores, transformer.sizes(kwargs, NAME),
        transformer.sizes(p.kwargs, NAME), [0, 1, 2])[('mlp', l)])
    assert len(drop) == 10
    zeroed = set_leaf(zeroed, f'blocks_{l}/mlp/down/kernel',
                  lambda w, d=drop: w.at[d].set(0))
  for a, b in zip(_logits(p.kwargs, p.variables, x),
                  _logits(kwargs, {'params': zeroed}, x)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_an_identity_block_is_dropped():
  model, v, batches = _setup(PRE)
  x = batches[0]['image']
  p = v['params']
  for leaf in ('attn/out/kernel', 'attn/out/bias', 'mlp/down/kernel',
               'mlp/down/bias'):  # Pre-LN block 1 adds nothing.
    p = set_leaf(p, f'blocks_1/{leaf}', jnp.zeros_like)
  for by in ('cosine', 'loss'):
    imp = transformer.layer_scores(model, {'params': p}, batches, 3, by, NAME)
    assert np.argmin(np.abs(imp)) == 1 and abs(imp[1]) < 1e-6, (by, imp)
  pruned = prune.prune(NAME, PRE, V, {'params': p}, batches, '', 'keep:2')
  assert pruned.layers == [0, 2] and pruned.kwargs == dict(PRE, num_layers=2)
  for a, b in zip(_logits(pruned.kwargs, pruned.variables, x),
                  _logits(PRE, {'params': p}, x)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_heads_and_embed_shrink_together():
  with pytest.raises(ValueError, match=r"--width heads:2,embed:24 keeps 2 "
                     r"heads and 24 channels, but a transformer_encoder's "
                     r'head size is d_model / num_heads \(6; .*valid '
                     r'heads:embed sizes: 1:6, 2:12, 3:18, 4:24$'):
    prune.pruned_kwargs(NAME, ENC, 'heads:2')
  assert prune.pruned_kwargs(NAME, ENC, 'heads:0.5,embed:0.5') == dict(
      ENC, num_heads=2, d_model=12)
  # Without mlp_hidden the default follows d_model: the pruned kwargs name
  # the neurons kept.
  assert prune.pruned_kwargs(NAME, {'d_model': 32, 'num_heads': 4},
                             'heads:2,embed:16') == {
                                 'd_model': 16, 'num_heads': 2,
                                 'mlp_hidden': 128}
  assert prune.pruned_kwargs('transformer_lm', {'d_model': 32, 'num_heads': 2},
                             'embed:16') == {'d_model': 16, 'num_heads': 2,
                                             'head_dim': 16,
                                             'mlp_hidden': 88}
