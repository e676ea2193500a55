"""kd.prune of the CNNs (cnn1d, cnn): a filter made useless ranks last by
both criteria, the scores against NumPy, pruning to the full size is the
same function, the pruned net equals the full one with the pruned channels
zeroed (exact for ReLU convnets, the flatten order included), targets
refused with the valid choices, and the MNIST-1D pipeline (teacher ->
prune -> KD) with its table."""
import json
import os

import jax
import numpy as np
import pytest

from configs.mnist1d import prune_distill
from experiments.prune_distill import mnist1d as mnist1d_table
from kd import main, models, prune, runs
from kd.prune import conv
from tests.prune_checks import spec_configs

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


# The MNIST-1D pipeline and its table.


def test_the_mnist1d_pipeline_prunes_then_distils(tmp_path):
  c = prune_distill.get_config('method=width,teacher_steps=2,steps=2,'
                               'calibration_batches=1,eval_every=1')
  for stage in c.stages.values():
    stage.wandb.mode = 'disabled'
  root = tmp_path / 'mnist1d_prune_distill'
  d = str(root / 'width_s0')
  summary = main.run_pipeline(c, d)
  pruned = runs.summary(os.path.join(d, 'pruned'))
  assert pruned['pruned'] and pruned['calibration_examples'] == 100
  # conv 5x1x16+16, 5x16x16+16 (twice), dense 10x16x64+64, head 64x10+10.
  assert pruned['params'] == 96 + 2 * 1296 + 10304 + 650 == 13642
  assert summary['student/params'] == 13642
  with open(os.path.join(d, 'pruned', 'importance.json')) as f:
    imp = json.load(f)
  assert imp['by'] == 'activation' and len(imp['channels']['conv2']) == 32
  t, _ = runs.latest_state(os.path.join(d, 'teacher'), 'test')
  p, _ = runs.latest_state(os.path.join(d, 'pruned'), 'test')
  t, p = t['params'], p['params']
  keep = [conv.top(imp['channels'][f'conv{i}'], 16) for i in range(3)]
  dense = conv.top(imp['dense'], 64)
  np.testing.assert_array_equal(p['conv1']['kernel'], np.asarray(
      t['conv1']['kernel'])[:, :, keep[0]][..., keep[1]])
  # The length is 40 / 2 / 2 = 10 after the pools: rows p * 32 + c.
  rows = np.asarray(t['dense']['kernel']).reshape(10, 32, 128)
  np.testing.assert_array_equal(
      p['dense']['kernel'], rows[:, keep[2]][..., dense].reshape(160, 64))
  with open(os.path.join(d, 'sweep.json'), 'w') as f:
    json.dump({'args': {'method': 'width', 'seed': 0}}, f)
  found = mnist1d_table.runs(str(root))
  run = found['width'][0]
  assert run['init'] == pruned['test_accuracy']
  # Examples: 2 steps of 100, tested after each.
  assert [e for e, _ in run['curve']] == [0, 100, 200]
  out = tmp_path / 'table'
  assert mnist1d_table.main([str(root), f'--out={out}']) == 0
  name = out / 'mnist1d_prune_distill'  # The sweep's folder.
  assert name.with_suffix('.md').read_text() == mnist1d_table.markdown(
      found) + '\n'
  assert name.with_suffix('.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_the_mnist1d_table_against_hand_values():
  found = {
      'random': {s: {'params': 13642, 'init': None, 'final': f,
                     'teacher': 0.95, 'teacher_params': 52874,
                     'teacher_model': 'cnn1d',
                     'curve': [(200, 0.3), (400, 1 - f)]}
                 for s, f in ((0, 0.8), (1, 0.8))},
      'width': {s: {'params': 13642, 'init': 0.7, 'final': f,
                    'teacher': 0.95, 'teacher_params': 52874,
                    'teacher_model': 'cnn1d',
                    'curve': [(0, 0.3), (200, 0.2), (400, 1 - f)]}
                for s, f in ((0, 0.85), (1, 0.87))}}
  rows = mnist1d_table.rows(found)
  assert rows[0] == ['random', 'random init, KD', '13,642', '2', '-',
                     '80.0 ± 0.0', '80.0 ± 0.0', '-', '400']
  # Error 0.2 reached at 200 examples of random's 400 (at its end); width
  # ends 5 and 7 points above random.
  assert rows[1] == ['width', 'pruned by activation, KD', '13,642', '2',
                     '70.0 ± 0.0', '86.0 ± 1.4', '86.0 ± 1.4', '+6.0 ± 1.4',
                     '200 (2.0x fewer)']
  assert 'Teacher (cnn1d, 52,874 parameters): 95.0%' in (
      mnist1d_table.markdown(found))


def test_the_spec_shares_one_teacher_and_one_student_shape(tmp_path):
  found = spec_configs('mnist1d_prune_distill', prune_distill.get_config,
                       str(tmp_path))
  assert len(found) == 4 * 3
  assert {c.stage_dirs.teacher for c in found} == {
      str(tmp_path / 'mnist1d_prune_distill' / 'teacher_cnn1d')}
  assert {(c.stages.student.model.kwargs.channels,
           c.stages.student.model.kwargs.dense, c.stages.student.steps)
          for c in found} == {((16, 16, 16), 64, 2000)}
  by = {c.stages.pruned.prune.width for c in found if 'pruned' in c.stages}
  assert by == {'channels:0.5,dense:0.5,by:activation',
                'channels:0.5,dense:0.5,by:l1'}
