"""jax2onnx -> onnxruntime: float32 logits parity for classifiers, ViT/DeiT
and the language model's three graphs; the command line, its sidecar, the
edge table and the errors."""
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import app, flags
from absl.testing import flagsaver

from kd import config as kd_config, models, runs, train
from kd.export import lm, onnx, student, table, tflite
from tests.lm_run_fixture import write_lm_run

TINY_VIT = {'depth': 2, 'width': 16, 'heads': 2, 'patch_size': 4}
CASES = {'mlp': ('mlp', (8, 8, 1), {}),
         'cnn': ('cnn', (8, 8, 1), {'channels': (4, 8), 'dense': 16}),
         'cnn1d': ('cnn1d', (40, 1), {'channels': (4, 4, 4), 'dense': 16}),
         'vit': ('vit_tiny', (16, 16, 3), TINY_VIT),
         'deit_distilled': ('deit_tiny_distilled', (40, 1), TINY_VIT)}


def _cli(*args):
  """`python -m kd.export ARGS` in this process (no second start-up)."""
  from kd.export import __main__ as export_cli  # pylint: disable=import-outside-toplevel
  with flagsaver.flagsaver():
    flags.FLAGS(['kd.export', *args])
    export_cli.main([])


@pytest.fixture(scope='module', params=sorted(CASES))
def model(request):
  name, shape, kw = CASES[request.param]
  m = models.create(name, 10, **kw)
  variables = m.init(jax.random.key(0), jnp.zeros((1, *shape)))
  predict = lambda x: m.apply(variables, x, train=False)[0]
  x = np.random.default_rng(0).normal(size=(5, *shape)).astype(np.float32)
  return {'predict': predict, 'shape': shape, 'x': x,
          'ref': np.asarray(jax.jit(predict)(x))}


def test_float32_dynamic_and_fixed_batch_match_jax_logits(model):
  dynamic = onnx.ONNXModel(onnx.convert(model['predict'], model['shape'],
                                        batch_size=None))
  assert dynamic.input.shape == ['B', *model['shape']]
  for n in (5, 2):
    out = dynamic.predict(model['x'][:n])
    assert out.shape == (n, 10)
    assert np.max(np.abs(out - model['ref'][:n])) <= 1e-4
  fixed = onnx.ONNXModel(onnx.convert(model['predict'], model['shape'],
                                      batch_size=2))
  assert fixed.input.shape == [2, *model['shape']]
  # 5 examples run as three zero-padded batches of 2.
  assert np.max(np.abs(fixed.predict(model['x']) - model['ref'])) <= 1e-4


def test_imagenet_resnet_max_pool_and_residual_adds():
  """Its stem pool calls max_pool with a positional window and (low, high)
  pads; the Add of stage 2's second block is where jax2onnx's stale NHWC
  shape hints broke onnxruntime. flax's max_pool is restored after."""
  m = models.create('resnet18_imagenet', 10, blocks=(1, 2, 1, 1))
  x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype(np.float32)
  variables = jax.jit(m.init)(jax.random.key(0), x)  # Not op by op.
  f = lambda v: m.apply(variables, v, train=False)[0]
  original = nn.max_pool
  out = onnx.ONNXModel(onnx.convert(f, (32, 32, 3), batch_size=None)).predict(x)
  assert nn.max_pool is original
  ref = np.asarray(jax.jit(f)(x))
  assert out.shape == ref.shape == (2, 10)
  assert np.max(np.abs(out - ref)) <= 1e-4


def test_unconvertible_model_is_named_with_the_fix():
  m = models.create('gru', 10)
  variables = m.init(jax.random.key(0), jnp.zeros((1, 40, 1)))
  with pytest.raises(tflite.ExportError,
                     match=r'ONNX conversion \(jax2onnx\) failed: .*GRU.*'
                     r'--format=tflite'):
    onnx.convert(lambda x: m.apply(variables, x)[0], (40, 1))


def test_quantized_onnx_is_refused_with_the_valid_choice():
  with pytest.raises(ValueError, match=r"float32 only.*'int8'.*\('none',\)"):
    onnx.convert(lambda x: x, (4,), quantize='int8')


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  c = kd_config.run_config()
  c.data.name, c.data.augment = 'kd_digits', False
  c.model.name, c.model.kwargs = 'cnn', {'channels': (4, 8), 'dense': 16}
  c.steps, c.checkpoint_every, c.log_every = 40, 40, 20
  c.optimizer.lr = 3e-3
  c.wandb.mode, c.evaluate.latency = 'disabled', False
  workdir = str(tmp_path_factory.mktemp('run'))
  train.train_and_evaluate(c, workdir)
  return workdir


def test_student_export_sidecar(run_dir, tmp_path):
  config, model, variables, step = runs.load_run(run_dir)
  out = str(tmp_path / 'm.onnx')
  side = student.export(config, model, variables, out, step=step,
                        format='onnx')
  assert json.load(open(out + '.json')) == side
  assert side['bytes'] == os.path.getsize(out) and side['format'] == 'onnx'
  assert side['input']['shape'] == [1, 8, 8, 1]
  assert side['test_examples'] == 360 and side['checkpoint_step'] == 40
  assert side['max_abs_diff_vs_jax'] <= 1e-4
  assert side['onnx_accuracy'] == side['jax_accuracy'] > 0.2
  assert side['latency_ms']['onnx_batch1'] > 0
  assert side['latency_ms']['jax_batch1'] > 0
  assert 'Conv' in side['ops'] and 'MaxPool' in side['ops']
  assert side['opset'] == onnx.OPSET


def test_command_line_writes_onnx_and_the_table_lists_it(run_dir):
  _cli(f'--workdir={run_dir}', '--format=onnx', '--batch=dynamic')
  out = os.path.join(run_dir, 'student_float32.onnx')
  side = json.load(open(out + '.json'))
  assert side['input']['shape'][0] == -1
  x = np.zeros((3, 8, 8, 1), np.float32)
  assert onnx.ONNXModel(open(out, 'rb').read()).predict(x).shape == (3, 10)
  config, model, variables, step = runs.load_run(run_dir)
  student.export(config, model, variables,
                 os.path.join(run_dir, 'student_none.tflite'), step=step,
                 latency=False)
  by_file = {r['file']: r for r in table.rows([run_dir])}
  text = table.markdown([by_file['student_float32.onnx'],
                         by_file['student_none.tflite']])
  for r, fmt in ((side, 'ONNX'), (by_file['student_none.tflite'], 'TFLite')):
    assert (f'| cnn | kd_digits | {fmt} | float32 | {r["bytes"]:,} '
            f'| {100 * r["jax_accuracy"]:.2f}% |') in text


def test_command_line_refuses_quantized_onnx(run_dir):
  with pytest.raises(app.UsageError,
                     match='--format=onnx exports float32 only: '
                     '--quantize=int8 is not supported; valid: '
                     '--quantize=none, or --format=tflite'):
    _cli(f'--workdir={run_dir}', '--format=onnx', '--quantize=int8')
  assert not os.path.exists(os.path.join(run_dir, 'student_int8.onnx'))


@pytest.fixture(scope='module')
def lm_run(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  workdir = write_lm_run(str(tmp_path_factory.mktemp('lm_run')), data_dir,
                         train_steps=20, sizes={'d_model': 32, 'num_layers': 2,
                                                'num_heads': 4, 'max_len': 64})
  return lm.load_run(workdir)


def test_lm_logits_prefill_and_decode_match_jax(lm_run):
  model, variables = lm_run.model, lm_run.variables
  m = onnx.ONNXLM(onnx.convert_lm(model, variables, seq_len=64,
                                  prompt_len=16, cache_len=32))
  assert (m.seq_len, m.prompt_len, m.cache_len) == (64, 16, 32)
  tokens = np.random.default_rng(0).integers(0, 259, 64).astype(np.int32)
  full = np.asarray(model.apply(variables, tokens[None])[0][0])
  assert np.max(np.abs(m.logits(tokens) - full)) <= 1e-4
  prefill, decode = lm.functions(model, variables, 32)
  logits, cache = m.prefill(tokens[:16])
  ref = prefill(tokens[None, :16])
  assert np.max(np.abs(logits - ref['logits'][0])) <= 1e-4
  assert np.max(np.abs(cache[0] - ref['k_cache'])) <= 1e-4
  logits, cache = m.decode(int(tokens[16]), 16, cache)
  ref = decode(tokens[None, 16:17], np.array([16], np.int32),
               ref['k_cache'], ref['v_cache'])
  assert np.max(np.abs(logits - ref['logits'][0])) <= 1e-4
  assert np.max(np.abs(cache[1] - ref['v_cache'])) <= 1e-4
  # Position 16 of the full sequence saw the same 17 tokens.
  assert np.max(np.abs(logits - full[16])) <= 1e-4


def test_lm_command_line_writes_three_graphs_and_parity(lm_run):
  out = os.path.join(lm_run.workdir, 'lm.onnx')
  _cli(f'--workdir={lm_run.workdir}', '--format=onnx', f'--out={out}',
       '--prompt_len=16', '--cache_len=48', '--parity_prompts=3',
       '--parity_tokens=8', '--bpb_rows=2')
  side = json.load(open(out + '.json'))
  paths = onnx.lm_paths(out)
  assert paths['decode'] == os.path.join(lm_run.workdir, 'lm.decode.onnx')
  assert side['bytes'] == sum(map(os.path.getsize, paths.values()))
  assert side['graphs']['decode']['file'] == 'lm.decode.onnx'
  assert side['logits_parity']['max_abs_diff_vs_jax'] <= 1e-4
  assert side['parity']['greedy_sequences_equal'] == 3
  bpb = side['bits_per_byte']
  assert bpb['onnxruntime'] == pytest.approx(bpb['jax_float32'], abs=1e-4)
  assert side['tokens_per_s']['onnxruntime'] > 0
  # Language-model sidecars stay out of the classifier table.
  assert table.rows([lm_run.workdir]) == []
