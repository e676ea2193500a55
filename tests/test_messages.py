"""Small message gaps: bad input named in one line, with the valid choices."""
import os
import subprocess
import sys

import pytest

from kd import config as kd_config
from kd import data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_an_unknown_dataset_lists_every_dataset_text_corpora_too():
  c = kd_config.run_config()
  c.data.name = 'kd_pystdlb'
  with pytest.raises(ValueError) as e:
    data.run_spec(c)
  assert str(e.value) == (
      "unknown dataset 'kd_pystdlb'; valid: cifar10, cifar100, image_folder, "
      'imagenet2012, kd_bbcnews, kd_digits, kd_english, kd_gensim, '
      'kd_pystdlib, kd_text, mnist, mnist1d')
  assert data.known('kd_pystdlib/tiny') and not data.known('kd_pystdlb')


def test_vectorize_seeds_that_are_not_numbers_name_the_flag(tmp_path):
  """Was a traceback ending in int()'s 'invalid literal', naming no flag."""
  proc = subprocess.run(
      [sys.executable, '-m', 'kd.main', '--config=configs/mnist1d/train.py',
       f'--workdir={tmp_path / "run"}', '--vectorize_seeds=0,a'], cwd=ROOT,
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1] == (
      "FATAL Flags parsing error: flag --vectorize_seeds=['0', 'a']: "
      '--vectorize_seeds takes whole-number seeds separated by commas, e.g. '
      '--vectorize_seeds=0,1,2') and 'Traceback' not in proc.stderr
  assert not (tmp_path / 'run').exists()


def test_a_config_error_is_one_line_before_any_stage_starts(tmp_path):
  """A loss-name typo in a pipeline's student stage was a traceback (after
  the teacher had trained, before preflight); now one line, no folder."""
  proc = subprocess.run(
      [sys.executable, '-m', 'kd.main',
       '--config=configs/mnist1d/distill.py:method=kd',
       f'--workdir={tmp_path / "run"}',
       '--config.stages.student.distill.terms.kd.loss=kdd'], cwd=ROOT,
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1, proc.stderr
  assert 'Traceback' not in proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith(
      "[kd.main] ConfigError: config.stages.student.distill.terms.kd.loss="
      "'kdd': unknown loss; valid: "), last
  assert ' kd,' in last
  assert not (tmp_path / 'run' / 'teacher' / 'checkpoints').exists()
