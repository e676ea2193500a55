"""Your own images (config.data.name='image_folder'): `data.data_dir` holds
`train/<class>/<image>` and `test/<class>/<image>` (PNG, JPEG, BMP or GIF).

The classes are train's folder names, sorted (label i is the i-th). Every
image is decoded to RGB and resized to `data.image_size` squared (bilinear,
antialiased; the aspect ratio is not kept) when the dataset is prepared,
into TFDS_DATA_DIR/kd_image_folder/sha<hash>/ (the hash of the files and
the size: changed images are prepared afresh). The normalisation (per-channel
mean and std of the resized train images, in [0, 1] units) is measured then
and recorded in the dataset's metadata and the run's dataset.json. Training
augments with a random crop after 4-pixel padding and a horizontal flip
(CIFAR's).

Errors, before any training, name the folder, class or file: no train or
test folder, a test class missing from train, a class or split without
images, a file that is not an image.
"""
import dataclasses
import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from kd.data import corpus

SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.gif')
SPLITS = ('train', 'test')


def folder_files(data_dir: str, image_size: int) -> corpus.Files:
  """The images of `data_dir` by split (`kd.data.corpus.Files`, which the
  run records), checked: see the module doc."""
  if not data_dir or not os.path.isdir(data_dir):
    raise corpus.CorpusError(
        f'config.data.data_dir={data_dir!r}: not a folder; image_folder '
        'reads DIR/train/<class>/* and DIR/test/<class>/*')
  classes = {}
  for split in SPLITS:
    root = os.path.join(data_dir, split)
    if not os.path.isdir(root):
      raise corpus.CorpusError(
          f'{root}: no such folder; image_folder reads {data_dir}/train/'
          f'<class>/* and {data_dir}/test/<class>/*')
    classes[split] = sorted(c for c in os.listdir(root)
                            if os.path.isdir(os.path.join(root, c))
                            and not c.startswith('.'))
    if not classes[split]:
      raise corpus.CorpusError(f'{root}: no class folder in the {split} '
                               'split; put its images in <class>/ folders')
  missing = sorted(set(classes['test']) - set(classes['train']))
  if missing:
    raise corpus.CorpusError(
        f'{data_dir}/test has classes that train lacks: {", ".join(missing)} '
        f'(train: {", ".join(classes["train"])}); the classes are train\'s '
        'folders: add those to train or remove them from test')
  groups = []
  for split in SPLITS:
    paths = []
    for c in classes[split]:
      folder = os.path.join(data_dir, split, c)
      found = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                     if not f.startswith('.'))
      bad = [p for p in found if not p.lower().endswith(SUFFIXES)
             or not os.path.isfile(p)]
      if bad:
        raise corpus.CorpusError(
            f'{bad[0]}: not an image file ({"/".join(SUFFIXES)}); class '
            f'folders hold images only')
      if not found and split == 'train':
        raise corpus.CorpusError(f'{folder}: class {c!r} has no image in '
                                 'train; add some or remove the folder')
      paths += [os.path.abspath(p) for p in found]
    if not paths:
      raise corpus.CorpusError(f'{data_dir}/{split}: the {split} split holds '
                               'no image; add some')
    groups.append((split, paths))
  return dataclasses.replace(
      corpus.make_files('image_folder', groups,
                        (('image_size', image_size),
                         ('classes', tuple(classes['train'])))),
      root=os.path.abspath(data_dir))


def load(path: str, size: int) -> np.ndarray:
  """The image at `path` as uint8 [size, size, 3]; an unreadable one is an
  error naming it."""
  try:
    x = tf.io.decode_image(tf.io.read_file(path), channels=3,
                           expand_animations=False)
  except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
    raise corpus.CorpusError(f'{path}: cannot be read as an image '
                             f'({e.message.splitlines()[0]})') from None
  x = tf.image.resize(x, (size, size), method='bilinear', antialias=True)
  return np.asarray(tf.clip_by_value(tf.round(x), 0, 255), np.uint8)


@dataclasses.dataclass
class FolderConfig(tfds.core.BuilderConfig):
  files: corpus.Files | None = None


class KdImageFolder(corpus.MadeConfigs, tfds.core.GeneratorBasedBuilder):
  """Images of class folders (see the module doc); metadata: `mean`, `std`
  (per channel, [0, 1] units, of the resized train images), `files_sha256`."""
  VERSION = tfds.core.Version('1.0.0')

  def _options(self):
    return dict(self.builder_config.files.options)

  def _info(self):
    o = self._options()
    size = o['image_size']
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(size, size, 3)),
            'label': tfds.features.ClassLabel(names=list(o['classes'])),
            'path': tfds.features.Text()}),
        supervised_keys=('image', 'label'),
        metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    del dl_manager
    files, size = self.builder_config.files, self._options()['image_size']
    total = np.zeros(3)
    squares = np.zeros(3)
    count = 0
    for split, paths in files.groups:  # Every image read before writing.
      for p in paths:
        x = load(p, size).reshape(-1, 3) / 255.0
        if split == 'train':
          total += x.sum(0)
          squares += (x ** 2).sum(0)
          count += len(x)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean ** 2, 1e-12))
    self.info.metadata.update({
        'mean': [round(float(v), 6) for v in mean],
        'std': [round(float(v), 6) for v in std],
        'files_sha256': files.sha256})
    return {split: self._generate_examples(files.root, paths, size)
            for split, paths in files.groups}

  def _generate_examples(self, root, paths, size):
    classes = list(self._options()['classes'])
    for p in paths:
      rel = os.path.relpath(p, root)
      yield rel, {'image': load(p, size),
                  'label': classes.index(rel.split(os.sep)[1]),
                  'path': rel}


def builder(data_dir: str, image_size: int, tfds_dir: str | None = None):
  """The prepared dataset of the images in `data_dir` at `image_size`."""
  if not image_size or image_size <= 0:
    raise corpus.CorpusError(
        f'config.data.image_size={image_size!r}: image_folder resizes every '
        'image to image_size squared; set --config.data.image_size, e.g. 64')
  files = folder_files(data_dir, image_size)
  config = FolderConfig(name=f'sha{files.sha256[:20]}', files=files)
  KdImageFolder.made(config)
  b = KdImageFolder(config=config, data_dir=tfds_dir)
  if not b.is_prepared():
    tfds.disable_progress_bar()
    b.download_and_prepare(file_format='tfrecord')
  return b
