"""Input pipelines through tensorflow-datasets, as numpy batches for JAX.

Training batches are deterministic for a seed and resumable: the iterator
started at step k yields exactly the batches an uninterrupted one yields from
its k-th on. Every epoch is shuffled with a seed of its own and augmentation
draws its randomness from (seed, example counter), so resuming jumps straight
to its epoch and skips less than one epoch of still-encoded records.
"""
import dataclasses
import math
import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

# Registers the kd_digits and mnist1d builders with tfds.
from kd.data import builders  # pylint: disable=unused-import
from kd.data import image_folder

OFFLINE = ('kd_digits', 'mnist1d')  # Built locally, never downloaded.
AUGMENTATIONS = ('none', 'shift', 'crop_flip', 'inception_crop_flip')
PROCESS_SPLITS = ('shard', 'slice')
_CACHE_LIMIT = 200_000  # Splits up to this size are cached in memory.


class DatasetNotPreparedError(RuntimeError):
  pass


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  name: str
  input_key: str  # Feature holding the input ('image' or 'signal').
  num_classes: int
  input_shape: tuple[int, ...]  # One example after preprocessing.
  mean: tuple[float, ...]  # Normalisation, in units of the [0, 1] input.
  std: tuple[float, ...]
  augment: str  # One of AUGMENTATIONS.
  input_dtype: str = 'float32'  # 'int32' for token ids.


_CIFAR_MEAN, _CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_SPECS = {
    # kd_digits and mnist1d statistics: measured on their train splits.
    'kd_digits': DatasetSpec('kd_digits', 'image', 10, (8, 8, 1), (0.3054,),
                             (0.3760,), 'shift'),
    'mnist1d': DatasetSpec('mnist1d', 'signal', 10, (40, 1), (-0.0003,),
                           (0.9976,), 'none'),
    'mnist': DatasetSpec('mnist', 'image', 10, (28, 28, 1), (0.1307,),
                         (0.3081,), 'none'),
    'cifar10': DatasetSpec('cifar10', 'image', 10, (32, 32, 3), _CIFAR_MEAN,
                           _CIFAR_STD, 'crop_flip'),
    'cifar100': DatasetSpec('cifar100', 'image', 100, (32, 32, 3),
                            (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
                            'crop_flip'),
    'imagenet2012': DatasetSpec('imagenet2012', 'image', 1000, (224, 224, 3),
                                _IMAGENET_MEAN, _IMAGENET_STD,
                                'inception_crop_flip'),
}


IMAGE_FOLDER = 'image_folder'  # Your images: kd.data.image_folder.


def names() -> list[str]:
  return sorted([*_SPECS, IMAGE_FOLDER])


def spec(name: str, image_size: int | None = None,
         data_dir: str | None = None) -> DatasetSpec:
  """The spec of `name`; `image_size` sets ImageNet's crop size (and your
  images' size, with `data_dir` their folder)."""
  if name == IMAGE_FOLDER:
    b = builder(name, data_dir, image_size=image_size)
    return DatasetSpec(name, 'image', b.info.features['label'].num_classes,
                       (image_size, image_size, 3),
                       tuple(b.info.metadata['mean']),
                       tuple(b.info.metadata['std']), 'crop_flip')
  if name not in _SPECS:
    raise ValueError(f'unknown dataset {name!r}; valid: {", ".join(names())}')
  s = _SPECS[name]
  if image_size and s.augment == 'inception_crop_flip':
    s = dataclasses.replace(s, input_shape=(image_size, image_size, 3))
  elif image_size and image_size != s.input_shape[0]:
    # A silently ignored size would train at another resolution than asked.
    raise ValueError(f'{name} has a fixed input size {s.input_shape}; '
                     f'image_size={image_size} applies to imagenet2012 only')
  return s


def _data_dir(data_dir: str | None) -> str | None:
  return data_dir or os.environ.get('TFDS_DATA_DIR') or None


def _prepare_hint(name: str, data_dir: str) -> str:
  if name == 'imagenet2012':
    return (f'Place ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in '
            f'{data_dir}/downloads/manual and run `tfds build imagenet2012 '
            f'--data_dir={data_dir}`.')
  return (f'On a machine with internet run `tfds build {name} '
          f'--data_dir={data_dir}` and copy {data_dir}/{name} here, or point '
          f'--config.data.data_dir at a TFDS dir that holds it (or set '
          f'--config.data.download=True where downloads work).')


def builder(name: str, data_dir: str | None = None, download: bool = False,
            image_size: int | None = None):
  """The prepared TFDS builder of `name`.

  The offline datasets are prepared on first use. Others must already be in
  `data_dir` unless `download` (tfds may then fetch them). Your images
  (`image_folder`) are read from `data_dir` at `image_size` and prepared
  in TFDS_DATA_DIR on first use.
  """
  if name == IMAGE_FOLDER:
    return image_folder.builder(data_dir, image_size, _data_dir(None))
  spec(name)
  b = tfds.builder(name, data_dir=_data_dir(data_dir))
  if name in OFFLINE or download:
    if not b.is_prepared():
      tfds.disable_progress_bar()
      # tf.data reads tfrecord only (ArrayRecord needs as_data_source).
      b.download_and_prepare(file_format='tfrecord')
  elif not b.is_prepared():
    raise DatasetNotPreparedError(
        f'dataset {name!r} is not prepared in {b.data_dir_root} and cannot '
        f'be downloaded here. {_prepare_hint(name, b.data_dir_root)}')
  return b


def num_examples(name: str, split: str, data_dir: str | None = None,
                 download: bool = False, image_size: int | None = None) -> int:
  return builder(name, data_dir, download, image_size
                 ).info.splits[split].num_examples


def _process_index_count(process_index, process_count) -> tuple[int, int]:
  import jax  # pylint: disable=import-outside-toplevel
  return (jax.process_index() if process_index is None else process_index,
          jax.process_count() if process_count is None else process_count)


def _process_split(split, process_index, process_count):
  process_index, process_count = _process_index_count(process_index,
                                                      process_count)
  if process_count == 1:
    return split
  return tfds.split_for_jax_process(split, process_index=process_index,
                                    process_count=process_count)


def _read(b, s: DatasetSpec, split):
  """(input, label) pairs in file order, images still encoded so that skipped
  records are never decoded."""
  decoders = ({'image': tfds.decode.SkipDecoding()}
              if s.input_key == 'image' else None)
  ds = b.as_dataset(split=split, shuffle_files=False, decoders=decoders,
                    read_config=tfds.ReadConfig(add_tfds_id=False))
  return ds.enumerate().map(lambda i, e: (e[s.input_key], (e['label'], i)))


_SMALL_SPLITS = {}  # The decoded small splits of this process, newest last.
_SMALL_SPLITS_KEPT = 4


def _records(b, s: DatasetSpec, split, exclude_classes):
  """(records, size, small): `_read`'s records without `exclude_classes`,
  their number, and whether they are few enough (`_CACHE_LIMIT`) to be
  decoded once and kept in memory. The pipelines of a process share a small
  split's records, and with them tf.data's in-memory cache: runs trained
  together (`kd.vectorize`) read and decode it once, not once per run."""
  key = (b.data_dir, s, str(split), tuple(exclude_classes))
  if key in _SMALL_SPLITS:
    return _SMALL_SPLITS[key]
  size = b.info.splits[split].num_examples
  records = _read(b, s, split)
  if exclude_classes:
    excluded = tf.constant(list(exclude_classes), tf.int64)
    records = records.filter(
        lambda x, y: tf.reduce_all(tf.not_equal(y[0], excluded)))
    size = int(records.map(lambda x, y: 1).reduce(0, lambda a, b: a + b))
  if size > _CACHE_LIMIT:
    return records, size, False
  records = records.map(lambda x, y: (_decode(b, s, x), y)).cache()
  _SMALL_SPLITS[key] = records, size, True
  while len(_SMALL_SPLITS) > _SMALL_SPLITS_KEPT:
    del _SMALL_SPLITS[next(iter(_SMALL_SPLITS))]
  return records, size, True


def _decode(b, s: DatasetSpec, x):
  if s.input_key != 'image':
    return tf.cast(x, tf.float32)
  return b.info.features['image'].decode_example(x)


def _normalise(s: DatasetSpec, x):
  if x.dtype == tf.uint8:
    x = tf.cast(x, tf.float32) / 255.0
  return (x - tf.constant(s.mean)) / tf.constant(s.std)


def _shift(x, seed, size):
  """Digits: translate by up to one pixel each way (zero-pad 1, random crop)."""
  x = tf.pad(x, [[1, 1], [1, 1], [0, 0]])
  return tf.image.stateless_random_crop(x, (size, size, x.shape[-1]), seed)


def _crop_flip(x, seed, size):
  """CIFAR: zero-pad by 4, random size x size crop, random horizontal flip."""
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(
      seed, 2))
  x = tf.pad(x, [[4, 4], [4, 4], [0, 0]])
  x = tf.image.stateless_random_crop(x, (size, size, x.shape[-1]), crop_seed)
  return tf.image.stateless_random_flip_left_right(x, flip_seed)


def _inception_crop_flip(x, seed, size):
  """ImageNet: random crop (8-100% area, aspect 3/4-4/3), resized, flipped."""
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(
      seed, 2))
  begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(x), tf.zeros([0, 0, 4], tf.float32), crop_seed,
      # The default min_object_covered=0.1 would cut off areas below 10%.
      min_object_covered=0.0, area_range=(0.08, 1.0),
      aspect_ratio_range=(3 / 4, 4 / 3), max_attempts=10,
      use_image_if_no_bounding_boxes=True)
  x = tf.slice(x, begin, crop_size)
  x = tf.image.resize(x, (size, size), method='bilinear')
  return tf.image.stateless_random_flip_left_right(x, flip_seed)


def _resize_central_crop(x, size):
  """ImageNet eval: shorter side to size / 0.875, central size x size crop."""
  shape = tf.cast(tf.shape(x)[:2], tf.float32)
  scale = (size / 0.875) / tf.reduce_min(shape)
  new = tf.cast(tf.round(shape * scale), tf.int32)
  x = tf.image.resize(x, new, method='bilinear')
  top, left = (new[0] - size) // 2, (new[1] - size) // 2
  return x[top:top + size, left:left + size]


def _preprocess(b, s: DatasetSpec, augment: bool, seed: int,
                id_offset: int = 0, decoded: bool = False):
  """Maps (example counter, encoded input, (label, id)) to a model-ready
  example; with `augment`, the counter and `seed` fix the example's random
  draws. `index` is the example's position in the whole split (memory banks
  such as CRD's are keyed by it)."""
  size = s.input_shape[0]

  def fn(index, x, label_id):
    label, example_id = label_id
    x = x if decoded else _decode(b, s, x)
    op_seed = tf.stack([tf.constant(seed, tf.int64), index])
    if s.augment == 'inception_crop_flip':
      if augment:
        x = _inception_crop_flip(x, op_seed, size)
      else:
        x = _resize_central_crop(x, size)
      x = tf.cast(x, tf.float32) / 255.0
    elif s.augment == 'shift' and augment:
      x = _shift(x, op_seed, size)
    elif s.augment == 'crop_flip' and augment:
      x = _crop_flip(x, op_seed, size)
    x = tf.ensure_shape(_normalise(s, x), s.input_shape)
    return {'image': x, 'label': tf.cast(label, tf.int32),
            'index': tf.cast(example_id + id_offset, tf.int32)}

  return fn


def _epoch_seed(seed: int, epoch):
  return tf.random.stateless_uniform(
      (), tf.stack([tf.constant(seed, tf.int64), epoch]), minval=None,
      maxval=None, dtype=tf.int64)


def example_batches(name: str, *, batch_size: int, seed: int,
                    data_dir: str | None = None, split: str = 'train',
                    augment: bool = True, start_step: int = 0,
                    process_index: int | None = None,
                    process_count: int | None = None,
                    shuffle_buffer: int = 10_000,
                    image_size: int | None = None, download: bool = False,
                    process_split: str = 'shard',
                    exclude_classes: tuple[int, ...] = ()):
  """Endless iterator of {'image': float32, 'label': int32} numpy batches of
  this process's `batch_size`, reshuffled every epoch. Examples of
  `exclude_classes` are left out (a transfer set without them).

  With several processes, `process_split='shard'` gives each process its own
  part of the split (`tfds.split_for_jax_process`: no record is read twice);
  'slice' has every process walk the same global order and keep its slice of
  each global batch, so the global batches, and hence training, do not
  depend on how many processes share the work.
  """
  if process_split not in PROCESS_SPLITS:
    raise ValueError(f'unknown process_split {process_split!r}; valid: '
                     f'{PROCESS_SPLITS}')
  index, count = _process_index_count(process_index, process_count)
  s = spec(name, image_size, data_dir)
  b = builder(name, data_dir, download, image_size)
  id_offset = 0
  if process_split == 'shard':
    id_offset = sum(b.info.splits[_process_split(split, j, count)].num_examples
                    for j in range(index))
    split = _process_split(split, index, count)
    index, count = 0, 1
  records, size, small = _records(b, s, split, exclude_classes)
  epoch, offset = divmod(start_step * batch_size * count, size)
  ds = tf.data.Dataset.range(epoch, np.iinfo(np.int64).max).flat_map(
      lambda e: records.shuffle(shuffle_buffer, seed=_epoch_seed(seed, e)))
  ds = ds.enumerate(start=epoch * size).skip(offset)
  if count > 1:  # Keep this process's slice of every global batch.
    mine = slice(index * batch_size, (index + 1) * batch_size)
    ds = ds.batch(batch_size * count, drop_remainder=True).map(
        lambda *batch: tf.nest.map_structure(lambda t: t[mine], batch)
    ).unbatch()
  if small and s.augment != 'inception_crop_flip' and not (
      augment and s.augment != 'none'):
    # Nothing per example left to do: normalise whole batches at once.
    def whole_batch(i, xy):
      del i
      x, (label, example_id) = xy
      return {'image': tf.ensure_shape(_normalise(s, x),
                                       (batch_size, *s.input_shape)),
              'label': tf.cast(label, tf.int32),
              'index': tf.cast(example_id + id_offset, tf.int32)}
    ds = ds.batch(batch_size, drop_remainder=True).map(whole_batch)
  else:
    fn = _preprocess(b, s, augment, seed, id_offset, decoded=small)
    ds = ds.map(lambda i, xy: fn(i, *xy), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True).batch(batch_size, drop_remainder=True)
  return _unchunked(ds, math.prod((batch_size, *s.input_shape)) * 4)


# Batches of up to this many bytes leave tf.data in chunks of several:
# fetching one tf.data element costs ~0.3 ms, more than a whole small step.
_CHUNK_BYTES = 4 * 2**20
_CHUNK_MAX = 64


def _unchunked(ds, batch_bytes: int):
  """The batches of `ds` (endless) as numpy, fetched `k` at a time."""
  k = max(1, min(_CHUNK_MAX, _CHUNK_BYTES // batch_bytes))
  chunks = tfds.as_numpy(ds.batch(k).prefetch(tf.data.AUTOTUNE))
  for chunk in chunks:
    for i in range(k):
      yield {key: v[i] for key, v in chunk.items()}


def _eval_dataset(name, split, data_dir, process_index, process_count,
                  image_size, download):
  s = spec(name, image_size, data_dir)
  b = builder(name, data_dir, download, image_size)
  local = _process_split(split, process_index, process_count)
  fn = _preprocess(b, s, False, 0)
  ds = _read(b, s, local).enumerate().map(
      lambda i, xy: fn(i, *xy), num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True)
  return ds, b.info.splits[split].num_examples


def eval_batches(name: str, *, batch_size: int, split: str = 'test',
                 data_dir: str | None = None, process_index: int | None = None,
                 process_count: int | None = None,
                 image_size: int | None = None, download: bool = False):
  """Every example of (this process's part of) `split` once, in order, as
  {'image', 'label', 'mask'} batches padded to `batch_size` (mask 0 marks
  padding). Every process yields the same number of batches, as collectives
  across processes need.

  Raises DatasetNotPreparedError at the call, not at the first batch.
  """
  _, count = _process_index_count(process_index, process_count)
  ds, total = _eval_dataset(name, split, data_dir, process_index,
                            process_count, image_size, download)
  num_batches = math.ceil(math.ceil(total / count) / batch_size)
  batches = tfds.as_numpy(ds.batch(batch_size).prefetch(tf.data.AUTOTUNE))
  return _padded(iter(batches), num_batches, batch_size,
                 spec(name, image_size, data_dir).input_shape)


def _padded(batches, num_batches, batch_size, input_shape):
  for _ in range(num_batches):
    # A process whose part is shorter pads a whole batch.
    batch = next(batches, None) or {
        'image': np.zeros((0, *input_shape), np.float32),
        'label': np.zeros((0,), np.int32)}
    n = len(batch['label'])
    pad = batch_size - n
    yield {'image': np.concatenate([batch['image'], np.zeros(
               (pad, *input_shape), np.float32)]),
           'label': np.concatenate([batch['label'], np.zeros(pad, np.int32)]),
           'mask': np.concatenate([np.ones(n, np.float32),
                                   np.zeros(pad, np.float32)])}


def indexed_batches(name: str, split: str, batch_size: int,
                    data_dir: str | None = None, image_size: int | None = None,
                    download: bool = False):
  """Every example of the whole `split` once, in file order, with eval
  preprocessing, as {'image', 'label', 'index'} batches (the last may be
  short); `index` is the example's position, as `example_batches` gives it."""
  ds, _ = _eval_dataset(name, split, data_dir, 0, 1, image_size, download)
  return tfds.as_numpy(ds.batch(batch_size).prefetch(tf.data.AUTOTUNE))


def load_split(name: str, split: str, data_dir: str | None = None,
               image_size: int | None = None, download: bool = False):
  """(images, labels) of a whole split with eval preprocessing (small data)."""
  ds, _ = _eval_dataset(name, split, data_dir, 0, 1, image_size, download)
  xs, ys = [], []
  for batch in tfds.as_numpy(ds.batch(1024)):
    xs.append(batch['image'])
    ys.append(batch['label'])
  return np.concatenate(xs), np.concatenate(ys)
