"""kd.convert: PyTorch teachers (RepDistiller, torchvision) into kd runs.

Parity fixtures (tests/fixtures/convert/, made by make_fixtures.py with
PyTorch): each model's state-dict key -> shape list, the seed of its
weights, an input and the reference model's logits. No torch needed here.
`pytest tests/test_convert.py -q -s -k logits` prints the parity table;
with KD_CONVERT_FIXTURES=DIR, of the fixtures in DIR (make_fixtures.py
--all --out=DIR: every model of both tables).
"""
import hashlib
import importlib.util
import json
import os
import sys

import jax
import numpy as np
import pytest

from kd import convert, data, models
from kd import runs as kd_runs
from kd.convert import __main__ as cli
from kd.convert import common

HERE = os.path.join(os.path.dirname(__file__), 'fixtures', 'convert')
_spec = importlib.util.spec_from_file_location(
    'make_fixtures', os.path.join(HERE, 'make_fixtures.py'))
make_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_fixtures)
PARITY_DIR = os.environ.get('KD_CONVERT_FIXTURES', HERE)
PARITY_CASES = sorted(f[:-len('.npz')] for f in os.listdir(PARITY_DIR)
                      if f.endswith('.npz'))
TOLERANCE = 1e-4  # Max abs logit difference, float32.


def load_case(case: str, folder: str = HERE):
  """(source, kd model, state dict, NHWC input, reference logits)."""
  with np.load(os.path.join(folder, f'{case}.npz')) as f:
    state = make_fixtures.random_state_dict(
        make_fixtures.unpack_shapes(f), int(f['seed']),
        float(f['linear_scale']))
    return (str(f['source']), str(f['model']), state,
            f['input'].transpose(0, 2, 3, 1), f['logits'])


@pytest.fixture(scope='module')
def logits_fn():
  """A jitted eval-mode forward per model name, compiled once."""
  fns = {}

  def get(source: str, model: str):
    if model not in fns:
      net = models.create(model, data.spec(
          convert.source_module(source).DATA).num_classes)
      fns[model] = jax.jit(lambda v, x: net.apply(v, x, train=False)[0])
    return fns[model]

  return get


@pytest.fixture(scope='module')
def resnet8_npz(tmp_path_factory):
  _, _, state, x, ref = load_case('resnet8')
  path = str(tmp_path_factory.mktemp('src') / 'resnet8.npz')
  np.savez(path, **state)
  return path, state, x, ref


def max_diff(logits_fn, source, model, variables, x, ref) -> float:
  return float(np.abs(np.asarray(logits_fn(source, model)(variables, x)) -
                      ref).max())


@pytest.mark.parametrize('case', PARITY_CASES)
def test_logits_match_the_pytorch_model(case, logits_fn):
  source, model, state, x, ref = load_case(case, PARITY_DIR)
  variables = convert.convert_state_dict(source, model, state)
  diff = max_diff(logits_fn, source, model, variables, x, ref)
  print(f'\n| {source} | {model} | {x.shape[1]}x{x.shape[2]} | {diff:.1e} |',
        end='')
  assert diff < TOLERANCE
  # Running statistics are the model's batch statistics, not re-estimated.
  for torch_leaf, flax_leaf in (('running_mean', 'mean'),
                                ('running_var', 'var')):
    found = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(
        variables['batch_stats']) if path[-1].key == flax_leaf]
    want = [v for k, v in state.items() if k.endswith(torch_leaf)]
    np.testing.assert_array_equal(np.sort(np.concatenate(found)),
                                  np.sort(np.concatenate(want)))


def test_cli_writes_a_finished_run_that_loads_as_a_teacher(
    resnet8_npz, tmp_path, logits_fn):
  path, _, x, ref = resnet8_npz
  out = str(tmp_path / 'teacher')
  assert cli.main(['--from=repdistiller', '--model=resnet8', path,
                   f'--out={out}']) == 0
  with open(os.path.join(out, 'config.json')) as f:
    config = json.load(f)
  with open(os.path.join(out, 'summary.json')) as f:
    summary = json.load(f)
  with open(path, 'rb') as f:
    digest = hashlib.sha256(f.read()).hexdigest()
  assert (config['model']['name'], config['data']['name']) == ('resnet8',
                                                               'cifar100')
  assert summary['converted'] is True and summary['source'] == 'repdistiller'
  assert summary['source_sha256'] == digest
  assert summary['steps'] == config['steps'] == 0
  assert kd_runs.is_finished(out)
  # The same load as kd.train's teacher: distill.teacher.workdir + .model.
  from configs.cifar100 import distill  # pylint: disable=import-outside-toplevel
  from kd import train  # pylint: disable=import-outside-toplevel
  t = distill.get_config('teacher=resnet8,student=resnet8').stages.student
  t = t.distill.teacher
  t.workdir = out
  teacher = models.from_config(t.model, t.kwargs, 100, 'float32')
  variables, _ = kd_runs.load_teacher(t.workdir, jax.eval_shape(
      lambda: teacher.init(jax.random.key(0), x[:1], train=False)))
  assert max_diff(logits_fn, 'repdistiller', 'resnet8', variables, x,
                  ref) < TOLERANCE


def test_safetensors_and_npz_give_the_same_run(resnet8_npz, tmp_path):
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  path, state, x, _ = resnet8_npz
  st = str(tmp_path / 'resnet8.safetensors')
  save_file(state, st)
  runs = {}
  for name, src in (('npz', path), ('st', st)):
    convert.convert('repdistiller', 'resnet8', src, str(tmp_path / name))
    runs[name], _ = kd_runs.load_variables(
        str(tmp_path / name), jax.eval_shape(lambda: models.create(
            'resnet8', 100).init(jax.random.key(0), x[:1], train=False)),
        'teacher')
  jax.tree.map(np.testing.assert_array_equal, runs['npz'], runs['st'])


def test_checkpoint_wrappers_are_unwrapped():
  w = np.ones((2,), np.float32)
  assert common._unwrap({'model': {'module.fc.bias': w}, 'epoch': 240}) == {
      'fc.bias': w}
  assert common._unwrap({'fc.bias': w}) == {'fc.bias': w}


def test_a_mismatch_lists_every_key_and_writes_nothing(resnet8_npz,
                                                       tmp_path, capsys):
  _, state, _, _ = resnet8_npz
  bad = dict(state)
  del bad['layer2.0.conv1.weight']
  bad['layer1.0.conv3.weight'] = np.zeros((16, 16, 3, 3), np.float32)
  bad['fc.weight'] = np.zeros((10, 64), np.float32)
  path = str(tmp_path / 'bad.npz')
  np.savez(path, **bad)
  with pytest.raises(common.MismatchError) as e:
    convert.convert('repdistiller', 'resnet8', path, str(tmp_path / 'out'))
  message = str(e.value)
  assert 'missing: params/layer2_0/Conv_0/kernel (3, 3, 16, 32)' in message
  assert 'unexpected: layer1.0.conv3.weight' in message
  assert 'shape mismatch: fc.weight (10, 64)' in message
  assert '(100,)' not in message and '3 problems' in message
  assert cli.main(['--from=repdistiller', '--model=resnet8', path,
                   f'--out={tmp_path / "out"}']) == 1
  assert 'unexpected: layer1.0.conv3.weight' in capsys.readouterr().err
  assert sorted(os.listdir(tmp_path)) == ['bad.npz']


def test_two_keys_on_one_variable_is_an_error(resnet8_npz):
  from kd.convert import repdistiller  # pylint: disable=import-outside-toplevel
  _, state, x, _ = resnet8_npz
  rules = [(r'^layer1\.0\.conv2$', 'layer1.0.conv1'),
           *repdistiller.RULES['resnet8']]
  abstract = jax.eval_shape(lambda: models.create('resnet8', 100).init(
      jax.random.key(0), x[:1], train=False))
  with pytest.raises(common.MismatchError) as e:
    common.to_variables(state, rules, abstract)
  assert ('duplicate: layer1.0.conv2.weight and layer1.0.conv1.weight both '
          'map to params/layer1_0/Conv_0/kernel') in str(e.value)
  assert 'missing: params/layer1_0/Conv_1/kernel' in str(e.value)


def test_an_existing_run_dir_is_not_overwritten(resnet8_npz, tmp_path):
  out = tmp_path / 'taken'
  out.mkdir()
  with pytest.raises(FileExistsError, match='remove it or choose another'):
    convert.convert('repdistiller', 'resnet8', resnet8_npz[0], str(out))
  assert os.listdir(out) == []


def test_a_failed_write_leaves_nothing(resnet8_npz, tmp_path, monkeypatch):
  def disk_full(*args):
    raise OSError('No space left on device')

  monkeypatch.setattr(common.checkpoint, 'save', disk_full)
  with pytest.raises(OSError, match='No space left'):
    convert.convert('repdistiller', 'resnet8', resnet8_npz[0],
                    str(tmp_path / 'out'))
  assert os.listdir(tmp_path) == []


def test_unknown_names_list_the_valid_ones():
  with pytest.raises(ValueError, match=r"no model 'resnet9'.*resnet8x4"):
    convert.model_name('repdistiller', 'resnet9')
  with pytest.raises(ValueError, match=r"unknown source 'mdistiller'.*timm"):
    convert.model_name('mdistiller', 'resnet18')
  assert convert.model_name('torchvision', 'resnet50') == 'resnet50_imagenet'


def test_pth_without_torch_says_how_to_install_it(tmp_path, monkeypatch):
  path = tmp_path / 'ckpt_epoch_240.pth'
  path.write_bytes(b'not read')
  monkeypatch.setitem(sys.modules, 'torch', None)  # `import torch` fails.
  with pytest.raises(ImportError, match='pip install torch'):
    convert.convert('repdistiller', 'resnet8', str(path),
                    str(tmp_path / 'out'))
  assert not (tmp_path / 'out').exists()


# Seeded bytes: the parameters are test ids, and pytest-xdist's workers must
# collect the same ids.
_RANDOM = np.random.default_rng(0).bytes(256)


@pytest.mark.parametrize('name,content,error', [
    ('missing.pth', None, 'no such file; give the path of a .pth/.pt, '
     '.safetensors or .npz checkpoint'),  # Was "needs PyTorch".
    ('missing.safetensors', None, 'no such file'),
    ('random.safetensors', _RANDOM, 'is not a readable .safetensors '
     'file ('),  # Was a raw SafetensorError.
    ('random.npz', _RANDOM, 'is not a readable .npz file (')],
    ids=['missing.pth', 'missing.safetensors', 'random.safetensors',
         'random.npz'])
def test_a_missing_or_damaged_checkpoint_is_named_in_one_line(
    tmp_path, capsys, name, content, error):
  path = tmp_path / name
  if content is not None:
    path.write_bytes(content)
  assert cli.main(['--from=repdistiller', '--model=resnet8', str(path),
                   f'--out={tmp_path / "out"}']) == 1
  (line,) = capsys.readouterr().err.strip().splitlines()
  assert line.startswith(f'error: {path}') and error in line, line
  assert not (tmp_path / 'out').exists()
