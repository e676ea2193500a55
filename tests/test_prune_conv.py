"""kd.prune of the CNNs (cnn1d, cnn): a filter made useless ranks last by
both criteria, the scores against NumPy, pruning to the full size is the
same function, the pruned net equals the full one with the pruned channels
zeroed (exact for ReLU convnets, the flatten order included) and targets
refused with the valid choices."""
import jax
import numpy as np
import pytest

from kd import models, prune
from kd.prune import conv

NETS = {'cnn1d': (dict(channels=(6, 5, 4), dense=7), (5, 40)),
        'cnn': (dict(channels=(5, 6), dense=7), (5, 8, 8))}
C = 3  # Classes.


def _setup(name, seed=0):
  kwargs, shape = NETS[name]
  model = models.create(name, C, **kwargs)
  x = jax.random.normal(jax.random.key(seed + 1), shape)
  params = model.init(jax.random.key(seed), x)['params']
  # Positive biases: no channel is dead by chance, only by construction.
  params = jax.tree_util.tree_map_with_path(
      lambda p, v: v + 1.0 if 'bias' in jax.tree_util.keystr(p) else v,
      params)
  params['dense']['bias'] += 20.0
  return model, {'params': params}, [{'image': x}, {'image': -x}]


def _set(params, layer, leaf, fn):
  out = jax.tree.map(lambda v: v, params)
  out[layer][leaf] = fn(out[layer][leaf])
  return out


def _logits(name, kwargs, variables, x):
  return models.create(name, C, **kwargs).apply(variables, x)[0]


@pytest.mark.parametrize('name', list(NETS))
def test_a_useless_filter_ranks_last_by_both_criteria(name):
  model, v, batches = _setup(name)
  kwargs = NETS[name][0]
  p = v['params']
  for leaf in ('kernel', 'bias'):  # Channel 2 of conv1 and dense unit 4.
    p = _set(p, 'conv1', leaf, lambda w: w.at[..., 2].set(0))
    p = _set(p, 'dense', leaf, lambda w: w.at[..., 4].set(0))
  n = len(kwargs['channels'])
  for by in ('activation', 'l1'):
    s = (conv.l1_scores(p, n) if by == 'l1' else
         conv.activation_scores(model, {'params': p}, batches, n))
    assert s.channels[1][2] == 0 and np.all(np.delete(s.channels[1], 2) > 0)
    assert s.dense[4] == 0 and np.all(np.delete(s.dense, 4) > 0)
    pruned = prune.prune(name, kwargs, C, {'params': p}, batches,
                         f'conv1:{kwargs["channels"][1] - 1},dense:6,by:{by}')
    assert pruned.kwargs == dict(kwargs, channels=(
        kwargs['channels'][0], kwargs['channels'][1] - 1,
        *kwargs['channels'][2:]), dense=6)
    np.testing.assert_array_equal(  # Channel 2 of conv1 is the one dropped.
        pruned.variables['params']['conv1']['kernel'],
        np.delete(np.asarray(p['conv1']['kernel']), 2, axis=-1))
    np.testing.assert_array_equal(pruned.variables['params']['head']['kernel'],
                                  np.delete(np.asarray(p['head']['kernel']),
                                            4, axis=0))
    assert pruned.scores.to_json()['by'] == by


def test_scores_match_numpy():
  name = 'cnn'
  model, v, batches = _setup(name)
  feats = [model.apply(v, b['image'])[1] for b in batches]
  s = conv.activation_scores(model, v, batches, 2)
  for i in range(2):
    a = np.concatenate([np.asarray(f[f'stage{i}'], np.float64) for f in feats])
    want = np.sqrt(np.sum(a.mean((1, 2))**2, 0))  # [B, H, W, C] -> [C]
    np.testing.assert_allclose(s.channels[i], want, rtol=1e-5)
  e = np.concatenate([np.asarray(f['embedding'], np.float64) for f in feats])
  np.testing.assert_allclose(s.dense, np.sqrt(np.sum(e**2, 0)), rtol=1e-5)
  s = conv.l1_scores(v['params'], 2)
  k = np.asarray(v['params']['conv1']['kernel'])  # [3, 3, in, out]
  np.testing.assert_allclose(
      s.channels[1], [np.abs(k[..., c]).sum() for c in range(6)], rtol=1e-6)
  np.testing.assert_allclose(
      s.dense, np.abs(np.asarray(v['params']['dense']['kernel'])).sum(0),
      rtol=1e-6)


@pytest.mark.parametrize('name', list(NETS))
def test_pruning_to_the_full_size_is_the_same_function(name):
  model, v, batches = _setup(name)
  kwargs = NETS[name][0]
  x = batches[0]['image']
  full = prune.prune(name, kwargs, C, v, batches, 'channels:1.0,dense:1.0')
  assert full.kwargs == kwargs
  np.testing.assert_array_equal(_logits(name, full.kwargs, full.variables, x),
                                model.apply(v, x)[0])


@pytest.mark.parametrize('name,by', [('cnn1d', 'activation'), ('cnn', 'l1'),
                                     ('cnn', 'activation')])
def test_pruned_equals_the_full_net_with_pruned_channels_zeroed(name, by):
  model, v, batches = _setup(name)
  kwargs = NETS[name][0]
  x = batches[0]['image']
  p = prune.prune(name, kwargs, C, v, batches,
                  f'channels:0.5,conv0:4,dense:0.5,by:{by}')
  want = dict(kwargs, channels=(4, *(round(c * 0.5)
                                     for c in kwargs['channels'][1:])),
              dense=4)
  assert p.kwargs == want
  zeroed = v['params']
  for i, n in enumerate(want['channels']):
    drop = np.setdiff1d(np.arange(kwargs['channels'][i]),
                        conv.top(p.scores.channels[i], n))
    assert len(drop) == kwargs['channels'][i] - n
    for leaf in ('kernel', 'bias'):
      zeroed = _set(zeroed, f'conv{i}', leaf, lambda w, d=drop: w.at[
          ..., d].set(0))
  drop = np.setdiff1d(np.arange(7), conv.top(p.scores.dense, 4))
  for leaf in ('kernel', 'bias'):
    zeroed = _set(zeroed, 'dense', leaf, lambda w, d=drop: w.at[..., d].set(0))
  got = _logits(name, p.kwargs, p.variables, x)
  np.testing.assert_allclose(got, model.apply({'params': zeroed}, x)[0],
                             rtol=1e-5, atol=1e-6)
  assert not np.allclose(got, model.apply(v, x)[0], atol=1e-3)


def test_conv_targets_refused_with_the_valid_choices():
  kw = NETS['cnn1d'][0]
  with pytest.raises(ValueError, match=r'--width channels:8 keeps 8 of 6 conv0 '
                     r'channels; valid sizes: 1, 2, 3, 4, 5, 6 \(a target '
                     'larger than the model'):
    prune.pruned_kwargs('cnn1d', kw, 'channels:8')
  with pytest.raises(ValueError, match=r'conv2:0.1 keeps 0 of 4 conv2 '
                     r'channels; valid sizes: 1, 2, 3, 4$'):
    prune.pruned_kwargs('cnn1d', kw, 'conv2:0.1')
  with pytest.raises(ValueError, match=r"unknown key 'conv3'; valid: "
                     'channels, conv0, conv1, conv2, dense, by'):
    prune.pruned_kwargs('cnn1d', kw, 'conv3:2')
  with pytest.raises(ValueError, match=r'by:l2: unknown; valid: activation '
                     r'\(.*\); l1 \(.*Li et al. 2017\)'):
    prune.pruned_kwargs('cnn', {}, 'channels:0.5,by:l2')
  with pytest.raises(ValueError, match=r"--depth='keep:1': a cnn is pruned "
                     'in width only'):
    prune.pruned_kwargs('cnn', {}, 'channels:0.5', 'keep:1')
  with pytest.raises(ValueError, match=r'dense:300 keeps 300 of 128 dense '
                     'units; valid sizes: 1 .. 128'):
    prune.pruned_kwargs('cnn', {}, 'dense:300')
  # The registry's defaults (cnn: 32, 64 channels) stay unnamed if unchanged.
  assert prune.pruned_kwargs('cnn', {}, 'conv1:0.25') == {'channels': (32, 16)}
  assert prune.pruned_kwargs('cnn1d', {}, 'dense:0.5,by:l1') == {'dense': 64}

