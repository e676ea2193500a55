"""kd.convert --from=timm: timm's ViT / DeiT into kd runs.

Fixtures (tests/fixtures/convert/timm/, made by its make_fixtures.py with
timm 1.0): a tiny ViT and DeiT-distilled as seeds + timm's logits, the
DeiT's state dict as a .safetensors file, and the key -> shape lists of
timm's full-size DeiT / ViT. No torch needed here. With
KD_CONVERT_TIMM_FIXTURES=DIR the parity test runs on the cases in DIR
(make_fixtures.py --all --out=DIR: full-size models, random weights).
"""
import hashlib
import importlib.util
import json
import os

import jax
import numpy as np
import pytest

from kd import convert, models
from kd import data as kd_data
from kd import runs as kd_runs
from kd.convert import __main__ as cli
from kd.convert import common

HERE = os.path.join(os.path.dirname(__file__), 'fixtures', 'convert', 'timm')
_spec = importlib.util.spec_from_file_location(
    'make_timm_fixtures', os.path.join(HERE, 'make_fixtures.py'))
make_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_fixtures)
base = make_fixtures.base
PARITY_DIR = os.environ.get('KD_CONVERT_TIMM_FIXTURES', HERE)
PARITY_CASES = sorted(f[:-len('.npz')] for f in os.listdir(PARITY_DIR)
                      if f.endswith('.npz') and f != 'full_size.npz')
TOLERANCE = 1e-4  # Max abs logit difference, float32.
SAFETENSORS = os.path.join(HERE, f'{make_fixtures.SAFETENSORS}.safetensors')


def load_case(case: str, folder: str = HERE):
  """(kd model, kwargs, data, image size, state dict, NHWC input, timm's
  logits)."""
  with np.load(os.path.join(folder, f'{case}.npz')) as f:
    state = base.random_state_dict(base.unpack_shapes(f), int(f['seed']),
                                   float(f['linear_scale']))
    return (str(f['model']), json.loads(str(f['kwargs'])), str(f['data']),
            int(f['image_size']), state, f['input'].transpose(0, 2, 3, 1),
            f['logits'])


@pytest.fixture(scope='module')
def logits_fn():
  """A jitted forward per kd model and kwargs, compiled once."""
  fns = {}

  def get(model: str, kwargs: dict, data: str):
    key = (model, json.dumps(kwargs, sort_keys=True), data)
    if key not in fns:
      net = models.create(model, kd_data.spec(data).num_classes, **kwargs)
      fns[key] = jax.jit(lambda v, x: net.apply(v, x, train=False)[0])
    return fns[key]

  return get


def max_diff(fn, variables, x, ref) -> float:
  return float(np.abs(np.asarray(fn(variables, x)) - ref).max())


@pytest.mark.parametrize('case', PARITY_CASES)
def test_logits_match_timm(case, logits_fn):
  model, kwargs, data, size, state, x, ref = load_case(case, PARITY_DIR)
  variables = convert.convert_state_dict('timm', model, state, data=data,
                                         image_size=size, kwargs=kwargs)
  diff = max_diff(logits_fn(convert.model_name('timm', model), kwargs, data),
                  variables, x, ref)
  print(f'\n| timm | {model} | {size}x{size} | {diff:.1e} |', end='')
  assert diff < TOLERANCE
  # The fused qkv keeps timm's [3, heads, head_dim] order: a transpose.
  np.testing.assert_array_equal(variables['params']['blocks1']['attn']['qkv'][
      'kernel'], state['blocks.1.attn.qkv.weight'].T)
  np.testing.assert_array_equal(variables['params']['norm']['scale'],
                                state['norm.weight'])


def test_cli_converts_the_safetensors_file_into_a_teacher_run(tmp_path,
                                                               logits_fn):
  model, kwargs, data, _, _, x, ref = load_case(make_fixtures.SAFETENSORS)
  out = str(tmp_path / 'deit')
  assert cli.main(['--from=timm', f'--model={model}', SAFETENSORS,
                   f'--data={data}', f'--kwargs={json.dumps(kwargs)}',
                   f'--out={out}']) == 0
  with open(os.path.join(out, 'config.json')) as f:
    config = json.load(f)
  with open(os.path.join(out, 'summary.json')) as f:
    summary = json.load(f)
  with open(SAFETENSORS, 'rb') as f:
    assert summary['source_sha256'] == hashlib.sha256(f.read()).hexdigest()
  assert summary['source'] == 'timm' and summary['model'] == model
  assert config['model'] == {'name': model, 'kwargs': kwargs}
  assert config['data']['name'] == data and kd_runs.is_finished(out)
  # Loaded as kd.train loads a teacher: the run's model name and kwargs.
  teacher = models.from_config(model, kwargs, 10, 'float32')
  variables, _ = kd_runs.load_teacher(out, jax.eval_shape(
      lambda: teacher.init(jax.random.key(0), x[:1], train=False)))
  assert max_diff(logits_fn(model, kwargs, data), variables, x,
                  ref) < TOLERANCE


@pytest.mark.parametrize('timm_name', make_fixtures.FULL_SIZE)
def test_full_size_timm_checkpoints_map_onto_kd_models(timm_name):
  """Every key of timm's model maps onto kd's at its input size, shapes
  equal (the position embeddings' count included)."""
  with np.load(os.path.join(HERE, 'full_size.npz')) as f:
    shapes = base.unpack_shapes({k: f[f'{timm_name}:{k}']
                                 for k in ('keys', 'ndims', 'dims')})
  # Zero-size-in-memory stand-ins: only names and shapes are checked.
  state = {k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()}
  image_size = int(timm_name.rpartition('_')[2])
  variables = convert.convert_state_dict('timm', timm_name, state,
                                         image_size=image_size)
  assert (sum(leaf.size for leaf in jax.tree.leaves(variables)) ==
          sum(int(np.prod(s)) for s in shapes.values()))


def test_a_mismatch_lists_the_keys_and_writes_nothing(tmp_path, capsys):
  """A distilled checkpoint named as a plain DeiT, and a wrong width."""
  out = tmp_path / 'out'
  with pytest.raises(common.MismatchError) as e:
    convert.convert('timm', 'deit_tiny', SAFETENSORS, str(out),
                    data='cifar10', kwargs=make_fixtures.TINY)
  message = str(e.value)
  assert 'unexpected: dist_token (1, 1, 32)' in message
  assert 'unexpected: head_dist.weight (10, 32)' in message
  assert ('shape mismatch: pos_embed (1, 18, 32) -> params/pos_embed '
          '(1, 18, 32), the model has (1, 17, 32)') in message
  assert '4 problems' in message
  kwargs = json.dumps({**make_fixtures.TINY, 'width': 64})
  assert cli.main(['--from=timm', '--model=deit_tiny_distilled',
                   SAFETENSORS, '--data=cifar10', f'--kwargs={kwargs}',
                   f'--out={out}']) == 1
  err = capsys.readouterr().err
  assert ('shape mismatch: blocks.0.mlp.fc1.weight (128, 32) -> '
          'params/blocks0/fc1/kernel (32, 128), the model has (64, 256)'
          ) in err
  assert os.listdir(tmp_path) == []


def test_bad_kwargs_and_names_are_errors(tmp_path, capsys):
  assert cli.main(['--from=timm', '--model=deit_tiny', SAFETENSORS,
                   '--kwargs=depth=2', f'--out={tmp_path / "out"}']) == 1
  assert 'is not a JSON object' in capsys.readouterr().err
  assert cli.main(['--from=timm', '--model=deit_tiny', SAFETENSORS,
                   '--kwargs={"depht": 2}', f'--out={tmp_path / "out"}']) == 1
  assert 'depht' in capsys.readouterr().err
  assert os.listdir(tmp_path) == []
  with pytest.raises(ValueError, match='image_size=384 applies to '
                     'imagenet2012 only'):
    convert.convert('timm', 'deit_tiny', SAFETENSORS, str(tmp_path / 'out'),
                    data='cifar10', image_size=384)
  assert (convert.model_name('timm', 'deit_small_distilled_patch16_224') ==
          'deit_small_distilled')
  with pytest.raises(ValueError, match=r"timm has no model 'deit_huge'.*"
                     r'deit_base_distilled'):
    convert.model_name('timm', 'deit_huge')
