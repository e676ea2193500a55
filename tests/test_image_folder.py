"""Your own images (data.name='image_folder'): class folders a user writes,
the quickstart-style pipeline on them (configs/image_folder.py: a CNN
teacher, an MLP distilled from it), the classes from train's
folders, the normalisation measured on train (checked by hand), the record
that refuses a resume on changed images, and each bad folder as an error
naming the class or file before any training."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from configs import image_folder as recipe
from kd import config as kd_config
from kd.config import pipeline_config
from kd import main
from kd import runs
from kd import train
from kd.data import corpus
from kd.data import input_pipeline

SIZE = 8
# Two classes of flat colours (a little noise): hand-countable statistics.
COLOURS = {'cat': (200, 40, 40), 'dog': (40, 60, 200)}


def _write_images(root, counts=(('train', 8), ('test', 3))):
  rng = np.random.default_rng(0)
  pixels = []
  for split, n in counts:
    for name, colour in COLOURS.items():
      (root / split / name).mkdir(parents=True)
      for i in range(n):
        x = np.clip(np.array(colour) + rng.integers(-20, 20, (SIZE, SIZE, 3)),
                    0, 255).astype(np.uint8)
        Image.fromarray(x).save(root / split / name / f'{i}.png')
        if split == 'train':
          pixels.append(x)
  return np.stack(pixels)


def _pipeline(data_dir):
  """The recipe's teacher and distilled student (its scratch baseline is
  the same MLP, trained the same way: left out to keep the test short)."""
  c = recipe.get_config(f'data_dir={data_dir},image_size={SIZE},steps=20,'
                        'batch=8,width=4')
  for stage in c.stages.values():
    stage.wandb.mode = 'disabled'
    stage.log_every = 10
  return pipeline_config(teacher=c.stages.teacher,
                         student_kd=c.stages.student_kd)


@pytest.fixture(scope='module')
def pipeline_run(tmp_path_factory):
  root = tmp_path_factory.mktemp('image_folder')
  pixels = _write_images(root / 'images')
  workdir = str(root / 'run')
  return root, pixels, workdir, main.run_pipeline(
      _pipeline(str(root / 'images')), workdir)


def test_teacher_and_students_train_on_your_images(pipeline_run):
  root, _, workdir, summary = pipeline_run
  # Two flat colours: every model tells them apart after 20 steps.
  for stage in ('teacher', 'student_kd'):
    assert summary[f'{stage}/test_accuracy'] == 1.0, stage
  assert summary['student_kd/teacher_step'] == 20
  # The six test images, each once.
  assert summary['teacher/test_examples'] == 6


def test_normalisation_is_measured_on_train_and_recorded(pipeline_run):
  root, pixels, workdir, _ = pipeline_run
  x = pixels.reshape(-1, 3) / 255.0  # By hand: per channel, over train.
  spec = input_pipeline.spec('image_folder', SIZE, str(root / 'images'))
  np.testing.assert_allclose(spec.mean, x.mean(0), atol=2e-6)
  np.testing.assert_allclose(spec.std, x.std(0), atol=2e-6)
  assert spec.num_classes == 2 and spec.input_shape == (SIZE, SIZE, 3)
  with open(os.path.join(workdir, 'teacher', 'dataset.json')) as f:
    record = json.load(f)
  assert record['options'] == {'image_size': SIZE, 'classes': ['cat', 'dog']}
  np.testing.assert_allclose(record['normalisation']['mean'], x.mean(0),
                             atol=2e-6)
  assert len(record['files']['train']) == 16
  assert record['files']['test'][0]['path'] == os.path.join('test', 'cat',
                                                            '0.png')
  # Labels follow train's sorted folder names: cat 0, dog 1 (red vs blue).
  images, labels = input_pipeline.load_split(
      'image_folder', 'test', str(root / 'images'), image_size=SIZE)
  red = images[..., 0] * spec.std[0] + spec.mean[0]
  assert list(labels[red.mean((1, 2)) > 0.5]) == [0, 0, 0]


def test_changed_images_refuse_to_resume_naming_the_file(pipeline_run):
  root, _, workdir, _ = pipeline_run
  path = root / 'images' / 'train' / 'dog' / '3.png'
  before = path.read_bytes()
  try:
    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(path)
    with pytest.raises(runs.ConfigMismatchError, match=(
        r'other files than config.data names now .*\n  changed \(train\): '
        r'train/dog/3.png \(')):
      main.run_pipeline(_pipeline(str(root / 'images')), workdir)
  finally:
    path.write_bytes(before)


def _config(data_dir):
  return _pipeline(str(data_dir)).stages.teacher


@pytest.mark.parametrize('change,message', [
    (lambda r: (r / 'test' / 'bird').mkdir(), r'/test has classes that train '
     r'lacks: bird \(train: cat, dog\); the classes are train\'s folders'),
    (lambda r: (r / 'train' / 'cat' / 'notes.txt').write_text('x'),
     r'train/cat/notes.txt: not an image file'),
    (lambda r: (r / 'train' / 'dog' / '0.png').write_bytes(b'not a png'),
     r'train/dog/0.png: cannot be read as an image'),
    (lambda r: (r / 'train' / 'fish').mkdir(), r"train/fish: class 'fish' "
     'has no image in train'),
    (lambda r: [os.remove(p) for p in (r / 'test').glob('*/*')],
     r'/test: the test split holds no image; add some'),
])
def test_bad_folders_are_refused_at_preflight_naming_class_or_file(
    tmp_path, change, message):
  _write_images(tmp_path, (('train', 1), ('test', 1)))
  change(tmp_path)
  with pytest.raises(corpus.CorpusError, match=message):
    train.preflight(_config(tmp_path))


def test_a_missing_folder_or_size_is_refused_before_any_work(tmp_path):
  with pytest.raises(corpus.CorpusError, match=r'train: no such folder'):
    train.preflight(_config(tmp_path))
  c = _config(tmp_path)
  c.data.image_size = 0
  with pytest.raises(kd_config.ConfigError, match=(
      r'config.data.image_size=0: image_folder resizes every image to '
      r'image_size squared; set --config.data.image_size, e.g. 64')):
    kd_config.validate(c)


def test_a_teacher_cache_records_the_images_content(pipeline_run):
  """A cache (kd.cache, shareable through distill.teacher.cache_dir) of
  other images than these is not taken for theirs."""
  from kd import cache  # pylint: disable=import-outside-toplevel
  from kd import data  # pylint: disable=import-outside-toplevel
  root, _, _, _ = pipeline_run
  c = _config(root / 'images')
  meta = cache.provenance(c, 0, {}, 'float32')
  assert meta['data']['files_sha256'] == data.files_of(c).sha256
  (root / 'images' / 'test' / 'cat' / 'extra.png').write_bytes(
      (root / 'images' / 'test' / 'cat' / '0.png').read_bytes())
  try:
    assert cache.provenance(c, 0, {}, 'float32') != meta
  finally:
    os.remove(root / 'images' / 'test' / 'cat' / 'extra.png')
