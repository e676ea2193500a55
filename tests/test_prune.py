"""kd.prune: importance that finds units made useless by construction, the
Minitron aggregation against NumPy, pruning to the full size is the same
function, the pruned model equals the teacher with the pruned units zeroed,
block influence against the hidden states, targets refused with the valid
choices, and the run directory (CLI, pipeline, init_from, reruns, bad
input) end to end."""
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.lm import prune_distill
from experiments.prune_distill import table
from kd import config as kd_config
from kd import main, models, prune, runs, train
from kd.prune import __main__ as prune_cli
from kd.prune import run as prune_run
from kd.prune import targets
from kd.prune import transformer
from tests.lm_run_fixture import write_lm_run
from tests.prune_checks import set_leaf

V = 13
MHA = dict(d_model=24, num_layers=3, num_heads=4, max_len=16, mlp_hidden=20)
GQA = dict(MHA, num_kv_heads=2)


def _setup(kwargs, seed=0):
  model = models.create('transformer_lm', V, **kwargs)
  x = jax.random.randint(jax.random.key(seed + 1), (6, 12), 0, V)
  variables = model.init(jax.random.key(seed), x)
  # Noisy norm scales: a channel's importance is not the same everywhere.
  params = jax.tree_util.tree_map_with_path(
      lambda p, v: v * (1 + 0.3 * jax.random.normal(jax.random.key(7),
                                                    v.shape))
      if 'scale' in jax.tree_util.keystr(p) else v, variables['params'])
  batches = [{'image': x, 'label': jnp.roll(x, -1, 1)}]
  return model, {'params': params}, batches


def _logits(kwargs, variables, x):
  return models.create('transformer_lm', V, **kwargs).apply(variables, x)[0]


def test_units_made_useless_rank_last():
  model, v, batches = _setup(MHA)
  p = v['params']
  p = set_leaf(p, 'blocks_1/attn/value/kernel', lambda w: w.at[:, 2].set(0))
  p = set_leaf(p, 'blocks_0/mlp/up/kernel', lambda w: w.at[:, 5].set(0))
  for norm in ('blocks_0/attn_norm', 'blocks_0/mlp_norm', 'blocks_1/attn_norm',
               'blocks_1/mlp_norm', 'blocks_2/attn_norm', 'blocks_2/mlp_norm',
               'final_norm'):
    p = set_leaf(p, f'{norm}/scale', lambda w: w.at[7].set(0))
  s = transformer.width_scores(model, {'params': p}, batches)
  assert s.heads[1][2] == 0 and np.argmin(s.heads[1]) == 2
  assert np.all(np.delete(s.heads[1], 2) > 0)
  assert s.mlp[0][5] == 0 and np.argmin(s.mlp[0]) == 5
  assert s.embed[7] == 0 and np.argmin(s.embed) == 7
  pruned = prune.prune('transformer_lm', MHA, V, {'params': p}, batches,
                       'heads:3,mlp:19,embed:23')
  kept = pruned.variables['params']
  assert kept['blocks_1']['attn']['value']['kernel'].shape == (23, 3, 6)
  np.testing.assert_array_equal(  # Head 2 of layer 1 is the one dropped.
      kept['blocks_1']['attn']['out']['kernel'][2],
      np.take(np.asarray(p['blocks_1']['attn']['out']['kernel'][3]),
              np.delete(np.arange(24), 7), axis=-1))


def test_aggregation_is_the_batch_l2_of_the_sequence_mean():
  rng = np.random.default_rng(0)
  score = rng.random((5, 7, 3)).astype(np.float32)
  mask = (rng.random((5, 7)) > 0.3).astype(np.float32)
  mask[0] = 0  # An example without tokens adds nothing.
  means = [(score[b] * mask[b][:, None]).sum(0) / max(mask[b].sum(), 1)
           for b in range(5)]
  want = np.sum(np.square(means), 0)
  np.testing.assert_allclose(
      transformer._batch_l2_of_seq_mean(score, mask), want, rtol=1e-6)


def test_scores_match_numpy_on_the_captured_activations():
  model, v, batches = _setup(MHA)
  x = batches[0]['image']
  seen = {}

  def grab(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == '__call__':
      seen['/'.join(context.module.path)] = (
          np.asarray(args[0], np.float64),
          np.asarray(out, np.float64) if hasattr(out, 'shape') else None)
    return out

  with nn.intercept_methods(grab):
    model.apply(v, x)
  s = transformer.width_scores(model, v, batches)
  agg = lambda a: np.sqrt(np.sum(a.mean(1)**2, 0))  # a: [B, T, n]
  np.testing.assert_allclose(
      s.mlp[2], agg(np.abs(seen['blocks_2/mlp/down'][0])), rtol=1e-5)
  heads = np.linalg.norm(seen['blocks_1/attn/out'][0], axis=-1)  # [B, T, H]
  np.testing.assert_allclose(s.heads[1], agg(heads), rtol=1e-5)
  norms = [k for k in seen if k.endswith('_norm')]
  assert len(norms) == 7  # Two per block and the final norm.
  want = agg(sum(np.abs(seen[k][1]) for k in norms))
  np.testing.assert_allclose(s.embed, want, rtol=1e-5)


@pytest.mark.parametrize('kwargs', [MHA, GQA])
def test_pruning_to_the_full_size_is_the_same_function(kwargs):
  model, v, batches = _setup(kwargs)
  x = batches[0]['image']
  full = prune.prune('transformer_lm', kwargs, V, v, batches,
                     'heads:1.0,mlp:1.0,embed:1.0', 'keep:3,by:loss')
  assert full.kwargs == kwargs
  np.testing.assert_array_equal(_logits(kwargs, full.variables, x),
                                model.apply(v, x)[0])


@pytest.mark.parametrize('kwargs,width', [(MHA, 'heads:2,mlp:11'),
                                          (GQA, 'heads:2,mlp:0.5')])
def test_pruned_equals_the_teacher_with_pruned_units_zeroed(kwargs, width):
  model, v, batches = _setup(kwargs)
  x = batches[0]['image']
  p = prune.prune('transformer_lm', kwargs, V, v, batches, width)
  s = transformer.sizes(kwargs)
  target = transformer.target_sizes(kwargs, targets.width(width),
                                    targets.depth(''))
  kept = transformer.kept_units(p.scores, s, target, list(range(3)))
  zeroed = v['params']
  for l in range(3):
    drop_h = np.setdiff1d(np.arange(s.num_heads), kept[('heads', l)])
    drop_m = np.setdiff1d(np.arange(s.mlp_hidden), kept[('mlp', l)])
    zeroed = set_leaf(zeroed, f'blocks_{l}/attn/out/kernel',
                  lambda w, d=drop_h: w.at[d].set(0))
    zeroed = set_leaf(zeroed, f'blocks_{l}/mlp/down/kernel',
                  lambda w, d=drop_m: w.at[d].set(0))
  if kwargs is GQA:  # Every kv group keeps one of its two query heads.
    assert [h // 2 for h in kept[('heads', 0)]] == [0, 1]
  np.testing.assert_allclose(_logits(p.kwargs, p.variables, x),
                             model.apply({'params': zeroed}, x)[0],
                             rtol=1e-5, atol=1e-5)


def test_depth_drops_the_identity_block_and_cosine_matches_hidden_states():
  model, v, batches = _setup(MHA)
  x = batches[0]['image']
  # Block 1 made the identity: its attention and MLP write nothing.
  p = set_leaf(v['params'], 'blocks_1/attn/out/kernel', jnp.zeros_like)
  p = set_leaf(p, 'blocks_1/mlp/down/kernel', jnp.zeros_like)
  cos = transformer.layer_scores(model, {'params': p}, batches, 3, 'cosine')
  assert np.argmin(cos) == 1 and abs(cos[1]) < 1e-6, cos
  # Skipping the identity changes no loss (an untrained block may lower it).
  loss = transformer.layer_scores(model, {'params': p}, batches, 3, 'loss')
  assert loss[1] == 0 and np.all(loss[[0, 2]] != 0), loss
  cos = transformer.layer_scores(model, v, batches, 3, 'cosine')
  feats = model.apply(v, x)[1]
  for l in range(3):
    a, b = (np.asarray(feats[f'hidden{i}'], np.float64) for i in (l, l + 1))
    c = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b,
                                                                       axis=-1)
    np.testing.assert_allclose(cos[l], 1 - c.mean(), rtol=1e-4, atol=1e-6)
  pruned = prune.prune('transformer_lm', MHA, V, {'params': p}, batches, '',
                       'keep:2,by:cosine')
  assert pruned.layers == [0, 2] and pruned.kwargs['num_layers'] == 2
  np.testing.assert_allclose(_logits(pruned.kwargs, pruned.variables, x),
                             model.apply({'params': p}, x)[0], rtol=1e-5,
                             atol=1e-5)


def test_targets_refused_with_the_valid_choices():
  with pytest.raises(ValueError, match=r'keeps 6 of 4 heads; valid sizes: '
                     r'1, 2, 3, 4 \(a target larger than the model'):
    prune.pruned_kwargs('transformer_lm', MHA, 'heads:6')
  with pytest.raises(ValueError, match=r'keeps 3 of 4 heads; valid sizes: '
                     r'2, 4$'):
    prune.pruned_kwargs('transformer_lm', GQA, 'heads:3')
  with pytest.raises(ValueError, match=r"unknown key 'neurons'; valid: heads, "
                     'mlp, embed'):
    prune.pruned_kwargs('transformer_lm', MHA, 'neurons:0.5')
  with pytest.raises(ValueError, match=r'keep:5 but the model has 3 layers; '
                     r'valid: 1 .. 3'):
    prune.pruned_kwargs('transformer_lm', MHA, '', 'keep:5')
  with pytest.raises(ValueError, match=r"by:norm: unknown; valid: cosine, "
                     'loss'):
    targets.depth('keep:2,by:norm')
  with pytest.raises(ValueError, match=r'a fraction is in \(0, 1\]'):
    targets.width('mlp:1.5')
  with pytest.raises(ValueError, match=r"kd.prune prunes transformer_lm, "
                     r"transformer_encoder, cnn1d, cnn and the ViTs \(.*"
                     r"vit_tiny.*\); the run holds a 'resnet8'"):
    prune.pruned_kwargs('resnet8', {}, 'mlp:0.5')
  assert prune.pruned_kwargs('transformer_lm', MHA, 'heads:0.5,embed:0.5',
                             'keep:2') == dict(MHA, num_heads=2, d_model=12,
                                               num_layers=2)
  assert prune.pruned_kwargs('transformer_lm', GQA, 'heads:2,embed:16') == (
      dict(GQA, num_heads=2, d_model=16, head_dim=6))


# The run directory.

SIZES = {'d_model': 32, 'num_layers': 2, 'num_heads': 2, 'max_len': 32}


@pytest.fixture(scope='module')
def teacher(tmp_path_factory):
  return write_lm_run(str(tmp_path_factory.mktemp('t') / 'teacher'), None,
                      train_steps=4, seq_len=16, batch_size=4, sizes=SIZES)


@pytest.fixture(scope='module')
def pruned(teacher, tmp_path_factory):
  out = str(tmp_path_factory.mktemp('p') / 'pruned')
  code = prune_cli.main([f'--workdir={teacher}', f'--out={out}',
                         '--width=heads:0.5,mlp:0.5', '--depth=keep:1',
                         '--calibration_batches=2'])
  assert code == 0
  return out


def test_the_cli_writes_a_run_with_provenance(pruned, teacher, capsys):
  summary = runs.summary(pruned)
  config = runs.load_config(pruned)
  assert summary['pruned'] and summary['steps'] == 0
  assert summary['source'] == os.path.abspath(teacher)
  assert summary['source_step'] == 4 and summary['calibration_batches'] == 2
  assert summary['calibration_tokens'] == 2 * 4 * 16  # Every target.
  assert config.model.kwargs.to_dict() == dict(
      SIZES, num_heads=1, num_layers=1, mlp_hidden=44, head_dim=16)
  assert summary['params'] == models.lm.param_count(models.create(
      'transformer_lm', 259, **config.model.kwargs))
  assert 0 < summary['test_bits_per_byte'] < 9
  with open(os.path.join(pruned, 'importance.json')) as f:
    imp = json.load(f)
  assert imp['layers']['by'] == 'cosine' and len(imp['layers']['scores']) == 2
  assert imp['kept_layers'] == summary['kept_layers']
  assert len(imp['heads'][str(imp['kept_layers'][0])]) == 2
  # The same command again reuses it; other flags are refused.
  assert prune_cli.main([f'--workdir={teacher}', f'--out={pruned}',
                         '--width=heads:0.5,mlp:0.5', '--depth=keep:1',
                         '--calibration_batches=2']) == 0
  assert 'already finished' in capsys.readouterr().out
  assert prune_cli.main([f'--workdir={teacher}', f'--out={pruned}',
                         '--width=heads:0.5', '--calibration_batches=2']) == 1
  err = capsys.readouterr().err
  assert 'holds a run of another config' in err and 'prune.width' in err


def test_a_killed_prune_reruns_and_bad_input_is_refused(teacher, tmp_path,
                                                        capsys):
  out = str(tmp_path / 'p')
  config = prune_run.run_config(teacher, 'mlp:0.5', 'keep:1,by:loss', 1)
  config.wandb.mode = 'disabled'
  first = prune_run.run(config, out)
  assert first['layer_loss_split'] == 'validation'  # Held out.
  os.remove(os.path.join(out, 'summary.json'))  # Killed before the end.
  assert prune_run.run(config, out) == first
  bad = prune_run.run_config(teacher, 'mlp:0.5', '', 1)
  bad.model.kwargs.mlp_hidden = 40
  with pytest.raises(kd_config.ConfigError, match=r"'mlp_hidden': 44.*set "
                     r'config.model.kwargs to that'):
    prune_run.run(bad, str(tmp_path / 'q'))
  other = prune_run.run_config(teacher, 'mlp:0.5', '', 1)
  other.data.update(tokenizer='bpe', vocab_size=300)
  with pytest.raises(kd_config.ConfigError, match=r"calibration data is "
                     r"tokenized as .*'bpe', 300.*reads \('byte', 0"):
    prune_run.run(other, str(tmp_path / 'r'))
  assert not os.path.exists(str(tmp_path / 'q'))
  assert prune_cli.main([f'--workdir={tmp_path}', f'--out={tmp_path}/s',
                         '--depth=keep:1']) == 1
  assert 'config.json' in capsys.readouterr().err


def _student(init_from, kwargs, **distill):
  c = kd_config.run_config()
  c.model.update(name='transformer_lm', kwargs=kwargs)
  c.data.update(name='kd_pystdlib/tiny', seq_len=16, augment=False)
  c.steps, c.batch_size, c.eval_batch_size, c.log_every = 2, 4, 64, 1
  c.evaluate.latency, c.wandb.mode = False, 'disabled'
  c.init_from = init_from
  c.distill.update(distill)
  return c


def test_init_from_a_pruned_run_and_its_mismatch(pruned, tmp_path):
  kwargs = runs.load_config(pruned).model.kwargs.to_dict()
  c = _student(pruned, kwargs)
  b = train.build(c, str(tmp_path / 's'), 'student')
  state, _ = runs.latest_state(pruned, 'test')
  jax.tree.map(np.testing.assert_array_equal, b.state.params, state['params'])
  with pytest.raises(kd_config.ConfigError, match=r'init_from is the pruned '
                     r"transformer_lm .*'num_heads': 1.*set "
                     r'config.model.kwargs'):
    train.preflight(_student(pruned, SIZES))


def test_a_pruned_run_as_a_teacher_of_another_vocabulary(pruned, tmp_path):
  kwargs = runs.load_config(pruned).model.kwargs.to_dict()
  c = _student('', SIZES)
  c.data.update(tokenizer='bpe', vocab_size=300)
  c.distill.teacher.update(workdir=pruned, model='transformer_lm',
                           kwargs=kwargs)
  c.distill.terms.kl = kd_config.term('forward_kl', 1.0)
  with pytest.raises(kd_config.ConfigError, match=r'the teacher \(.*pruned\) '
                     r'reads a vocabulary of 259 tokens \(byte\), the '
                     r'student 300 \(bpe\)'):
    main.run_pipeline(kd_config.pipeline_config(student=c), str(tmp_path))


def test_the_pipeline_checks_its_prune_stage_before_any_work(tmp_path):
  c = prune_distill.get_config(
      'method=both,teacher_size=tiny,teacher_steps=2,steps=2,seq_len=16,'
      'batch=4,dataset=kd_pystdlib/tiny,both_width=heads:0.5,both_depth=keep:1')
  c.stages.pruned.prune.width = 'heads:3'
  with pytest.raises(kd_config.ConfigError, match=r'stages.pruned.prune: '
                     r'--width heads:3 keeps 3 of 2 heads'):
    main.run_pipeline(c, str(tmp_path))
  c.stages.pruned.prune.width = 'heads:0.5,mlp:0.5'
  with pytest.raises(kd_config.ConfigError, match=r'stages.pruned.model is '
                     'transformer_lm'):
    main.run_pipeline(c, str(tmp_path))
  assert not os.path.exists(str(tmp_path / 'teacher'))
  with pytest.raises(ValueError, match=r"unknown method 'prune'; valid: "):
    prune_distill.get_config('method=prune')


def test_tokens_to_reach_interpolates_between_test_points():
  curve = [(0, 4.0), (100, 3.0), (200, 2.0)]
  assert table.tokens_to_reach(curve, 2.5) == 150
  assert table.tokens_to_reach(curve, 4.5) == 0
  assert table.tokens_to_reach(curve, 1.0) is None


def test_the_pipeline_and_its_table(tmp_path):
  root = tmp_path / 'lm_prune_distill'
  c = prune_distill.get_config(
      'method=width_ce,teacher_size=tiny,teacher_steps=2,steps=2,seq_len=16,'
      'batch=4,dataset=kd_pystdlib/tiny,eval_every=1,width=heads:0.5,'
      'calibration_batches=1')
  for stage in c.stages.values():
    stage.update(log_every=1, eval_batch_size=64)
    stage.wandb.mode = 'disabled'
  c.stage_dirs = {'teacher': str(root / 'teacher')}
  run = root / 'width_ce'
  summary = main.run_pipeline(c, str(run))
  with open(run / 'sweep.json', 'w') as f:
    json.dump({'args': {'method': 'width_ce', 'seed': '0'}}, f)
  assert summary['pruned/params'] == summary['student/params'] < summary[
      'teacher/params']
  width = table.runs(str(root))['width_ce'][0]
  out = tmp_path / 'table'
  assert table.main([str(root), f'--out={out}']) == 0
  assert (out / 'table.md').read_text() == table.markdown(
      table.runs(str(root))) + '\n'
  assert (out / 'plot.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  # The curve starts at the pruned model's own test, at 0 tokens.
  assert width['curve'] == [(0, summary['pruned/test_bits_per_byte']),
                            (64, width['curve'][1][1]),
                            (128, summary['student/test_bits_per_byte'])]
  # Against random-init and strided rows (made up): same-seed difference,
  # tokens to each one's final figure against its own.
  found = {'width': {0: dict(width, curve=[(0, 3.0), (64, 2.0)], final=2.0)},
           'random': {0: dict(width, curve=[(0, 8.0), (128, 2.5)],
                              final=2.5, init=None)}}
  rows = {r[0]: r for r in table.rows(found)}
  assert rows['random'][4:] == ['-', '2.500', '-', '0.00M', '-']
  assert rows['width'][5:] == ['2.000', '-0.500', '0.00M (4.0x fewer)', '-']
  found['strided'] = {0: dict(width, curve=[(0, 6.0), (128, 2.2)],
                              final=2.2, init=None)}
  rows = {r[0]: r for r in table.rows(found)}
  # Width reaches 2.2 at 64 * 0.8 / 1.0 = 51.2 tokens, strided at 128.
  assert rows['width'][7:] == ['0.00M (4.0x fewer)', '0.00M (2.5x fewer)']
  assert rows['random'][7:] == ['0.00M', 'not within the run']
  assert rows['strided'][6:] == ['-0.300', '0.00M (1.1x fewer)', '0.00M']
