"""Bad config values and config-file arguments fail before any work, naming
the field and the fix."""
import glob
import importlib
import os
import runpy
import subprocess
import sys

import pytest

from configs import quickstart
from configs.mnist1d import train as mnist1d_train
from kd import config as kd_config
from kd import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def _run(**fields):
  c = kd_config.run_config()
  for path, value in fields.items():
    *parents, key = path.split('__')
    node = c
    for p in parents:
      node = node[p]
    node[key] = value
  return c


@pytest.mark.parametrize('path,value,message', [
    ('steps', 0, r'config\.steps=0: must be positive; set --config\.steps'),
    ('batch_size', -8, r'config\.batch_size=-8: must be positive'),
    ('eval_batch_size', 0, r'config\.eval_batch_size=0: must be positive'),
    ('log_every', 0, r'config\.log_every=0: must be positive'),
    ('checkpoint_every', 0, r'config\.checkpoint_every=0: must be positive'),
    ('eval_every', -1, r'config\.eval_every=-1: must be 0 \(test only at'),
    ('optimizer__accumulate_steps', 0,
     r'config\.optimizer\.accumulate_steps=0: must be positive'),
    ('optimizer__lr', 0.0, r'config\.optimizer\.lr=0\.0: the learning rate'),
    ('label_smoothing', 1.0, r'config\.label_smoothing=1\.0: must be in'),
    ('mixup_alpha', -0.5, r'config\.mixup_alpha=-0\.5: cannot be negative'),
    ('dtype', 'fp16', r"config\.dtype='fp16': unknown name; valid: float32, "
     'bfloat16'),
    ('parallel', 'gspmd', r"config\.parallel='gspmd': unknown name; valid: "
     'pmap, mesh'),
    ('optimizer__name', 'lamb', r"config\.optimizer\.name='lamb': unknown"),
])
def test_bad_value_names_the_field_and_the_fix(path, value, message):
  with pytest.raises(ValueError, match=message):
    kd_config.validate(_run(**{path: value}), num_devices=1)


def test_eval_every_zero_means_only_at_the_end_and_is_valid():
  kd_config.validate(_run(eval_every=0), num_devices=1)


def test_num_classes_in_model_kwargs_is_explained_not_a_type_error():
  c = kd_config.run_config()
  c.model.kwargs.num_classes = 10
  with pytest.raises(ValueError, match=r'config\.model\.kwargs\.num_classes='
                     r'10: .*comes from the dataset.*remove num_classes'):
    kd_config.validate(c, num_devices=1)


def test_batch_not_divisible_by_devices():
  with pytest.raises(ValueError, match=r'config\.batch_size=10: .* 4 devices; '
                     'choose a multiple of 4'):
    kd_config.validate(_run(batch_size=10), num_devices=4)


def test_zero_temperature_in_a_pipeline_stage_term():
  c = quickstart.get_config()
  c.stages.student_kd.distill.terms.kd.kwargs.temperature = 0.0
  with pytest.raises(ValueError, match=r'config\.stages\.student_kd\.distill\.'
                     r'terms\.kd\.kwargs\.temperature=0\.0: .*positive'):
    kd_config.validate(c, num_devices=1)


def test_train_and_evaluate_rejects_before_touching_the_workdir(tmp_path):
  with pytest.raises(ValueError, match=r'config\.steps=0'):
    train.train_and_evaluate(_run(steps=0), str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def test_config_arguments_are_typed_and_unknown_keys_fail():
  a = kd_config.parse_args('seed=3,lr=0.5,qat=1,name=x', seed=0, lr=1.0,
                           qat=False, name='', hint=int)
  assert a == {'seed': 3, 'lr': 0.5, 'qat': True, 'name': 'x', 'hint': None}
  assert kd_config.parse_args('hint=2', hint=int) == {'hint': 2}
  with pytest.raises(ValueError, match="unknown config argument 'modle'.*"
                     'valid: model, seed, steps'):
    mnist1d_train.get_config('modle=cnn1d')
  with pytest.raises(ValueError, match=r"seed='one': expected int"):
    mnist1d_train.get_config('seed=one')
  with pytest.raises(ValueError, match=r"qat='yes': expected 0/1"):
    kd_config.parse_args('qat=yes', qat=False)
  assert mnist1d_train.get_config('model=cnn1d,steps=7').model.name == 'cnn1d'


def test_pipeline_override_of_a_run_field_names_the_stages(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'kd.main', '--config=configs/quickstart.py',
       f'--workdir={tmp_path}', '--config.parallel=mesh'], cwd=ROOT,
      capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 1
  assert ("pipeline configs have no field 'parallel'; it is set per stage: "
          '--config.stages.teacher.parallel=mesh, '
          '--config.stages.student_scratch.parallel=mesh, '
          '--config.stages.student_kd.parallel=mesh') in proc.stderr
  assert not list(tmp_path.iterdir())


@pytest.mark.parametrize('module', [
    'configs.quickstart', 'configs.mnist1d.train', 'configs.mnist1d.distill',
    'configs.cifar100.teacher', 'configs.cifar100.distill',
    'configs.imagenet.distill', 'experiments.adversarial.config',
    'experiments.born_again.config', 'experiments.multi_teacher.config',
    'experiments.omitted_class.config', 'experiments.online.config',
    'experiments.self_distillation.config'])
def test_every_config_file_is_valid_and_rejects_unknown_arguments(module):
  get_config = importlib.import_module(module).get_config
  kd_config.validate(get_config(None), num_devices=1)
  with pytest.raises(ValueError, match="unknown config argument 'typo'"):
    get_config('typo=1')


@pytest.mark.parametrize('module,field,value', [
    ('online', 'dtype', 'bfloat16'),
    ('self_distillation', 'label_smoothing', 0.1),
    ('adversarial', 'mixup_alpha', 0.2),
    ('multi_teacher', 'distill.quantization_aware', True),
    ('online', 'distill.teacher.cache', True),
])
def test_variant_rejects_fields_it_does_not_support(tmp_path, module, field,
                                                    value):
  c = importlib.import_module(f'experiments.{module}.config').get_config(
      'steps=5')
  *parents, key = field.split('.')
  node = c
  for p in parents:
    node = node[p]
  node[key] = value
  train_fn = importlib.import_module(f'experiments.{module}.train').train
  with pytest.raises(ValueError, match=rf'config\.{field}={value!r}: the '
                     f'{module} variant does not support it; set it to'):
    train_fn(c, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def test_variant_validates_values_first(tmp_path):
  c = importlib.import_module('experiments.online.config').get_config(
      'temperature=0')
  train_fn = importlib.import_module('experiments.online.train').train
  # The variant's temperature is its mutual term's (kd.steps.apply_terms).
  with pytest.raises(ValueError, match=r'config\.distill\.terms\.mutual\.'
                     r'kwargs\.temperature=0\.0: a temperature must be '
                     'positive'):
    train_fn(c, str(tmp_path / 'run'))



@pytest.mark.parametrize('spec', sorted(
    os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, 'launch',
                                                             'specs', '*.py'))))
def test_every_sweep_argument_parses(spec):
  """Every launch spec's ARGS (with a seed) are valid for its config file."""
  s = importlib.import_module(f'launch.specs.{spec}')
  get_config = runpy.run_path(os.path.join(ROOT, s.CONFIG))['get_config']
  for arg in s.ARGS:
    kd_config.validate(get_config(arg.format(root='/r') + ',seed=1'),
                       num_devices=1)
