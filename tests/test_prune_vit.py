"""kd.prune of the ViT/DeiT (joint qkv projection, flat head outputs):
units made useless rank last, head scores against NumPy on the captured
outputs, the qkv columns and proj rows of the heads kept, pruning to the
full size is the same function, the pruned ViT equals the full one with
the pruned neurons zeroed, an identity block is dropped, and 1-D inputs."""
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.vit import prune_distill
from kd import main, models, prune, runs
from kd.prune import transformer
from tests.prune_checks import set_leaf, spec_configs

C = 5
VIT = dict(patch_size=4, width=24, depth=3, heads=4, mlp_ratio=2.0)


def _setup(name='vit_tiny', shape=(6, 8, 8, 1), seed=0):
  model = models.create(name, C, **VIT)
  x = jax.random.normal(jax.random.key(seed + 1), shape)
  variables = model.init(jax.random.key(seed), x)
  params = jax.tree_util.tree_map_with_path(  # Norms unlike each other.
      lambda p, v: v * (1 + 0.3 * jax.random.normal(jax.random.key(7),
                                                    v.shape))
      if 'scale' in jax.tree_util.keystr(p) else v, variables['params'])
  return model, {'params': params}, [{'image': x,
                                      'label': jnp.arange(shape[0]) % C}]


def _logits(name, kwargs, variables, x):
  return models.create(name, C, **kwargs).apply(variables, x)[0]


def test_units_made_useless_rank_last_and_heads_match_numpy():
  model, v, batches = _setup()
  p = v['params']
  v_cols = 2 * 24 + 1 * 6 + np.arange(6)  # Head 1's values in [3, H, D].
  p = set_leaf(p, 'blocks2/attn/qkv/kernel', lambda w: w.at[:, v_cols].set(0))
  p = set_leaf(p, 'blocks2/attn/qkv/bias', lambda w: w.at[v_cols].set(0))
  for leaf in ('kernel', 'bias'):
    p = set_leaf(p, f'blocks0/fc1/{leaf}', lambda w: w.at[..., 3].set(0))
  for norm in ('blocks0/norm1', 'blocks0/norm2', 'blocks1/norm1',
               'blocks1/norm2', 'blocks2/norm1', 'blocks2/norm2', 'norm'):
    for leaf in ('scale', 'bias'):
      p = set_leaf(p, f'{norm}/{leaf}', lambda w: w.at[5].set(0))
  s = transformer.width_scores(model, {'params': p}, batches, 'vit_tiny')
  assert s.heads[2][1] == 0 and np.all(np.delete(s.heads[2], 1) > 0)
  assert s.mlp[0][3] == 0 and np.all(np.delete(s.mlp[0], 3) > 0)
  assert s.embed[5] == 0 and np.all(np.delete(s.embed, 5) > 0)
  seen = {}

  def grab(next_fun, args, kwargs, context):
    if '/'.join(context.module.path) == 'blocks0/attn/proj':
      seen['x'] = np.asarray(args[0], np.float64)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(grab):
    model.apply({'params': p}, batches[0]['image'])
  heads = np.linalg.norm(seen['x'].reshape(6, 5, 4, 6), axis=-1)  # [B, N, H]
  np.testing.assert_allclose(s.heads[0],
                             np.sqrt(np.sum(heads.mean(1)**2, 0)), rtol=1e-5)
  pruned = prune.prune('vit_tiny', VIT, C, {'params': p}, batches,
                       'heads:3,embed:18,mlp:47')
  assert pruned.kwargs == dict(VIT, heads=3, width=18, mlp_ratio=47 / 18)
  kept = pruned.variables['params']
  channels = np.sort(np.argsort(-s.embed, kind='stable')[:18])
  heads2 = np.array([0, 2, 3])  # Head 1 of layer 2 dropped.
  cols = (heads2[:, None] * 6 + np.arange(6)).reshape(-1)
  np.testing.assert_array_equal(
      kept['blocks2']['attn']['qkv']['kernel'],
      np.asarray(p['blocks2']['attn']['qkv']['kernel'])[channels][
          :, np.concatenate([cols, 24 + cols, 48 + cols])])
  np.testing.assert_array_equal(
      kept['blocks2']['attn']['proj']['kernel'],
      np.asarray(p['blocks2']['attn']['proj']['kernel'])[cols][:, channels])
  assert kept['pos_embed'].shape == (1, 5, 18)
  assert models.create('vit_tiny', C, **pruned.kwargs).apply(
      pruned.variables, batches[0]['image'])[0].shape == (6, C)


@pytest.mark.parametrize('name', ['vit_tiny', 'deit_tiny_distilled'])
def test_full_size_is_the_same_function_and_pruned_equals_zeroed(name):
  model, v, batches = _setup(name)
  x = batches[0]['image']
  full = prune.prune(name, VIT, C, v, batches, 'heads:1.0,mlp:1.0,embed:1.0',
                     'keep:3,by:loss')
  assert full.kwargs == VIT
  np.testing.assert_array_equal(_logits(name, VIT, full.variables, x),
                                model.apply(v, x)[0])
  p = prune.prune(name, VIT, C, v, batches, 'mlp:0.25')
  assert p.kwargs == dict(VIT, mlp_ratio=0.5)
  zeroed = v['params']
  for l in range(3):
    drop = np.setdiff1d(np.arange(48), np.argsort(-p.scores.mlp[l],
                                                  kind='stable')[:12])
    zeroed = set_leaf(zeroed, f'blocks{l}/fc2/kernel',
                  lambda w, d=drop: w.at[d].set(0))
  np.testing.assert_allclose(_logits(name, p.kwargs, p.variables, x),
                             model.apply({'params': zeroed}, x)[0],
                             rtol=1e-5, atol=1e-5)


def test_an_identity_block_is_dropped_on_1d_signals():
  model, v, batches = _setup(shape=(6, 40, 1))  # MNIST-1D: 10 patches.
  x = batches[0]['image']
  p = v['params']
  for leaf in ('attn/proj/kernel', 'attn/proj/bias', 'fc2/kernel',
               'fc2/bias'):
    p = set_leaf(p, f'blocks1/{leaf}', jnp.zeros_like)
  for by in ('cosine', 'loss'):
    imp = transformer.layer_scores(model, {'params': p}, batches, 3, by,
                                   'vit_tiny')
    assert np.argmin(np.abs(imp)) == 1 and abs(imp[1]) < 1e-6, (by, imp)
  pruned = prune.prune('vit_tiny', VIT, C, {'params': p}, batches,
                       'heads:2,embed:12', 'keep:2')
  assert pruned.layers == [0, 2]
  # The MLP keeps its 48 neurons: 4 x the narrower width.
  assert pruned.kwargs == dict(VIT, depth=2, heads=2, width=12, mlp_ratio=4.0)
  full = prune.prune('vit_tiny', VIT, C, {'params': p}, batches, '', 'keep:2')
  np.testing.assert_allclose(_logits('vit_tiny', full.kwargs, full.variables,
                                     x),
                             model.apply({'params': p}, x)[0], rtol=1e-5,
                             atol=1e-5)
  with pytest.raises(ValueError, match=r"keeps 2 heads and 24 channels, but "
                     r"a vit_tiny's head size is d_model / num_heads \(6; "
                     r'.*valid heads:embed sizes: 1:6, 2:12, 3:18, 4:24$'):
    prune.pruned_kwargs('vit_tiny', VIT, 'heads:2')


def test_the_vit_pipeline_prunes_then_distils_and_its_spec(tmp_path):
  c = prune_distill.get_config('method=width,width=16,heads=2,depth=2,'
                               'teacher_steps=2,steps=2,eval_every=1,'
                               'calibration_batches=1')
  for stage in c.stages.values():
    stage.wandb.mode = 'disabled'
  summary = main.run_pipeline(c, str(tmp_path / 'run'))
  pruned = runs.summary(str(tmp_path / 'run' / 'pruned'))
  with open(tmp_path / 'run' / 'pruned' / 'config.json') as f:
    assert json.load(f)['model']['kwargs'] == {
        'patch_size': 4, 'width': 8, 'depth': 2, 'heads': 1}
  assert pruned['pruned'] and pruned['source_params'] == summary[
      'teacher/params']
  # Per block 2 norms 4*8, qkv 8*24+24, proj 8*8+8, MLP 8*32+32 and
  # 32*8+8; patch 4*8+8, class token 8, 11 positions, final norm, head.
  block = 32 + 216 + 72 + 288 + 264
  assert summary['student/params'] == pruned['params'] == (
      40 + 8 + 88 + 2 * block + 16 + 90)
  assert summary['student/params'] < summary['teacher/params']

  found = spec_configs('vit_prune_distill', prune_distill.get_config,
                       str(tmp_path))
  assert len(found) == 3 * 3
  assert {c.stage_dirs.teacher for c in found} == {
      str(tmp_path / 'vit_prune_distill' / 'teacher_vit')}
  assert {tuple(sorted(c.stages.student.model.kwargs.items()))
          for c in found} == {(('depth', 4), ('heads', 2), ('patch_size', 4),
                               ('width', 32))}
  with pytest.raises(ValueError, match=r"unknown method 'depth'; valid: "
                     r"\('random', 'width', 'width_ce'\)"):
    prune_distill.get_config('method=depth')
