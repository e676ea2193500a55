"""`python -m kd.export` on a trained run: files, sidecar, parity."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from absl import flags
from absl.testing import flagsaver
from ai_edge_litert.interpreter import Interpreter

from kd import config as kd_config, runs, train
from kd.export import student, tflite
from tests import run_checks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(tmp_path_factory, dataset: str, steps: int) -> str:
  c = kd_config.run_config()
  c.data.name, c.data.augment = dataset, False
  c.model.name, c.model.kwargs.hidden = 'mlp', (16,)
  c.steps, c.checkpoint_every, c.log_every = steps, steps, 50
  c.optimizer.lr = 3e-3
  c.wandb.mode, c.evaluate.latency = 'disabled', False
  workdir = str(tmp_path_factory.mktemp(dataset))
  train.train_and_evaluate(c, workdir)
  return workdir


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  return _train(tmp_path_factory, 'kd_digits', 150)


@pytest.fixture(scope='module')
def signal_run_dir(tmp_path_factory):
  return _train(tmp_path_factory, 'mnist1d', 300)


def app_accuracy(model_path: str) -> float:
  """What an app does with an exported file: it reads only the sidecar and
  the raw dataset as tfds stores it (no kd code: json, numpy, tfds and the
  LiteRT interpreter), and returns its test accuracy."""
  with open(model_path + '.json') as f:
    inp = json.load(f)['input']
  src = inp['source']
  b = tfds.builder_from_directory(os.path.join(os.environ['TFDS_DATA_DIR'],
                                               src['tfds_name']))
  examples = list(tfds.as_numpy(b.as_dataset(split=src['split'])))
  raw = np.stack([e[src['feature']] for e in examples])
  labels = np.array([e[src['label']] for e in examples])
  assert raw.dtype == np.dtype(src['dtype'])
  x = (raw.astype(np.float32) / np.float32(inp['divide_by'])
       - np.float32(inp['mean'])) / np.float32(inp['std'])
  if 'quantize' in inp:
    q = inp['quantize']
    x = np.clip(np.round(x / q['scale'] + q['zero_point']), q['min'], q['max'])
  x = x.astype(inp['dtype'])
  interpreter = Interpreter(model_path=model_path)
  n = inp['shape'][0]
  if n == -1:  # A dynamic batch: the whole split at once.
    n = len(x)
    interpreter.resize_tensor_input(
        interpreter.get_input_details()[0]['index'], x.shape)
  interpreter.allocate_tensors()
  x_index = interpreter.get_input_details()[0]['index']
  y_index = interpreter.get_output_details()[0]['index']
  predicted = []
  for i in range(0, len(x), n):
    batch = x[i:i + n]
    batch = np.concatenate([batch, np.zeros((n - len(batch), *x.shape[1:]),
                                            x.dtype)])
    interpreter.set_tensor(x_index, batch)
    interpreter.invoke()
    predicted.extend(interpreter.get_tensor(y_index).argmax(-1))
  return float(np.mean(np.array(predicted[:len(labels)]) == labels))


@pytest.mark.parametrize('quantize', ['none', 'int8'])
@pytest.mark.parametrize('kind', ['image', 'signal'])
def test_an_app_reading_only_the_sidecar_gets_the_reported_accuracy(
    run_dir, signal_run_dir, tmp_path, kind, quantize):
  workdir = run_dir if kind == 'image' else signal_run_dir
  config, model, variables, step = runs.load_run(workdir)
  out = str(tmp_path / 'm.tflite')
  side = student.export(config, model, variables, out, quantize=quantize,
                        step=step, latency=False)
  inp = side['input']
  assert inp['kind'] == kind
  if kind == 'signal':  # MNIST-1D: float signals, never divided by 255.
    assert inp['source']['dtype'] == 'float32' and inp['divide_by'] == 1
    assert 'not divided by 255' in inp['formula']
    assert side['test_examples'] == 1000
  else:
    assert inp['source']['dtype'] == 'uint8' and inp['divide_by'] == 255
    assert inp['formula'].startswith('x = (pixels / 255 - mean) / std')
  assert ('quantize' in inp) == (quantize == 'int8')
  assert side['tflite_accuracy'] > 0.25  # Well above chance (0.1).
  assert app_accuracy(out) == side['tflite_accuracy']


def test_load_run_restores_the_trained_student(run_dir):
  config, model, variables, step = runs.load_run(run_dir)
  assert step == 150 and config.model.name == 'mlp'
  assert variables['params']['dense0']['kernel'].shape == (64, 16)


@pytest.mark.parametrize('quantize', ['none', 'int8'])
def test_export_writes_file_and_sidecar(run_dir, tmp_path, quantize):
  config, model, variables, step = runs.load_run(run_dir)
  out = str(tmp_path / f'm_{quantize}.tflite')
  side = student.export(config, model, variables, out, quantize=quantize,
                        step=step, latency=True)
  on_disk = json.load(open(out + '.json'))
  assert on_disk == side and side['bytes'] == os.path.getsize(out)
  assert side['checkpoint_step'] == 150 and side['test_examples'] == 360
  assert side['class_names'] == [str(i) for i in range(10)]
  assert side['input']['shape'] == [1, 8, 8, 1]
  summary = json.load(open(os.path.join(run_dir, 'summary.json')))
  assert side['jax_accuracy'] == pytest.approx(summary['test_accuracy'])
  assert side['latency_ms']['tflite_batch1'] > 0
  if quantize == 'none':
    assert side['max_abs_diff_vs_jax'] < 1e-4
    assert side['tflite_accuracy'] == side['jax_accuracy']
    assert side['quantization']['input_dtype'] == 'float32'
  else:
    assert side['quantization']['input_dtype'] == 'int8'
    assert side['quantization']['input_scale'] > 0
    assert side['jax_accuracy'] - side['tflite_accuracy'] <= 0.01
    assert 'warning' not in side


def test_command_line_dynamic_batch_fp16(run_dir, tmp_path):
  out = tmp_path / 'dyn.tflite'
  proc = subprocess.run(
      [sys.executable, '-m', 'kd.export', f'--workdir={run_dir}',
       '--quantize=fp16', '--batch=dynamic', f'--out={out}'],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, PYTHONPATH=ROOT))
  assert proc.returncode == 0, proc.stderr[-2000:]
  side = json.load(open(str(out) + '.json'))
  assert side['input']['shape'][0] == -1 and side['quantize'] == 'fp16'
  m = tflite.TFLiteModel(out.read_bytes())
  assert m.predict(np.zeros((3, 8, 8, 1), np.float32)).shape == (3, 10)


def test_not_a_run_directory_is_explained(tmp_path):
  with pytest.raises(FileNotFoundError, match='must be a run'):
    runs.load_run(str(tmp_path))


def test_edge_table_from_sidecars(run_dir, tmp_path):
  from kd.export import table  # pylint: disable=import-outside-toplevel
  config, model, variables, step = runs.load_run(run_dir)
  student.export(config, model, variables, os.path.join(run_dir, 'x.tflite'),
                 quantize='int8', step=step, latency=True)
  (row,) = [r for r in table.rows([run_dir]) if r['file'] == 'x.tflite']
  text = table.markdown([row])
  assert f'| mlp | kd_digits | TFLite | int8 | {row["bytes"]:,} |' in text
  assert f'{100 * row["tflite_accuracy"]:.2f}%' in text


def _cli(*args):
  """`python -m kd.export ARGS` in this process: its one-line refusal."""
  from kd.export import __main__ as export_cli  # pylint: disable=import-outside-toplevel
  with flagsaver.flagsaver():
    flags.FLAGS(['kd.export', *args])
    export_cli.cli_main([])


def test_a_pipeline_top_folder_names_its_stages(tmp_path):
  top = tmp_path / 'quickstart'
  proc = run_checks.pipeline_top_folder_refusal(
      top, 'teacher', 'student_kd', command=['kd.export'])
  assert proc.returncode == 1
  assert proc.stderr.splitlines()[-1] == (
      f"kd.export: {top} is a pipeline's top folder, not one run; its "
      f'stages: teacher ({top}/teacher), student_kd ({top}/student_kd). '
      f"Pass one stage's directory, e.g. --workdir={top}/student_kd (the "
      'last stage)')
  assert 'Traceback' not in proc.stderr


def test_an_unfinished_run_is_refused_unless_allowed(run_dir, tmp_path,
                                                     capsys):
  # A run started with --config.steps=300 and killed after step 150.
  killed = tmp_path / 'killed'
  shutil.copytree(run_dir, killed)
  os.remove(killed / 'summary.json')
  config = json.loads((killed / 'config.json').read_text())
  (killed / 'config.json').write_text(json.dumps(dict(config, steps=300)))
  out = tmp_path / 'm.tflite'
  with pytest.raises(SystemExit) as e:
    _cli(f'--workdir={killed}', f'--out={out}')
  assert e.value.code == (
      f'kd.export: {killed} is unfinished: its newest checkpoint is step 150 '
      'of the configured 300 steps; finish it by rerunning its training '
      'command, or pass --allow_unfinished to export its newest checkpoint')
  assert not out.exists()
  _cli(f'--workdir={killed}', f'--out={out}', '--allow_unfinished')
  assert (f'WARNING: {killed} is unfinished: its newest checkpoint is step '
          '150 of the configured 300 steps') in capsys.readouterr().err
  assert json.loads((tmp_path / 'm.tflite.json').read_text())[
      'checkpoint_step'] == 150


def test_onnx_without_jax2onnx_gives_the_install_line(run_dir, monkeypatch):
  monkeypatch.setitem(sys.modules, 'jax2onnx', None)  # Not installed.
  with pytest.raises(SystemExit) as e:
    _cli(f'--workdir={run_dir}', '--format=onnx')
  assert e.value.code == (
      'kd.export: --format=onnx needs jax2onnx, which is not installed: '
      'pip install --no-deps jax2onnx==0.17.1')
  assert not os.path.exists(os.path.join(run_dir, 'student_float32.onnx'))


def _files(root) -> dict:
  return {os.path.join(d, n): os.stat(os.path.join(d, n)).st_mtime_ns
          for d, _, names in os.walk(root) for n in names}


def test_a_read_only_finished_run_exports_elsewhere(run_dir, tmp_path):
  frozen = tmp_path / 'frozen'
  shutil.copytree(run_dir, frozen)
  before = _files(frozen)
  for d, _, names in os.walk(frozen):
    for p in [d] + [os.path.join(d, n) for n in names]:
      os.chmod(p, os.stat(p).st_mode & ~0o222)
  try:
    if os.geteuid() != 0:  # Root writes anyway: no refusal to see.
      with pytest.raises(SystemExit) as e:
        _cli(f'--workdir={frozen}')
      assert e.value.code == (
          f'kd.export: cannot write {frozen}/student_none.tflite: {frozen} '
          'is not writable (the export goes into the run directory by '
          'default); pass --out=PATH in a writable directory')
    out = tmp_path / 'elsewhere' / 'm.tflite'
    _cli(f'--workdir={frozen}', f'--out={out}')
    assert json.loads(out.with_suffix('.tflite.json').read_text())[
        'checkpoint_step'] == 150
    assert _files(frozen) == before  # Nothing written in the run.
  finally:
    for d, _, names in os.walk(frozen):
      for p in [d] + [os.path.join(d, n) for n in names]:
        os.chmod(p, os.stat(p).st_mode | 0o200)
