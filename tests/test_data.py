"""Input pipelines: the offline builders and the real loaders on mock data."""
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from kd import data
from tests.mock_tfds import metadata_dir

_MOCK_EXAMPLES = 16
_MOCK_SPLITS = {'mnist': ('train', 'test'), 'cifar10': ('train', 'test'),
                'cifar100': ('train', 'test'),
                'imagenet2012': ('train', 'validation')}


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


@pytest.fixture(scope='module')
def digits(data_dir):
  return (data.load_split('kd_digits', 'train', data_dir),
          data.load_split('kd_digits', 'test', data_dir))


@pytest.fixture(scope='module')
def mock_dir(tmp_path_factory):
  """`tfds.testing.mock_data` replaces the records but not the metadata that
  the pipeline reads (is_prepared, split sizes): provide that."""
  return metadata_dir(str(tmp_path_factory.mktemp('mock_tfds')), _MOCK_SPLITS,
                      _MOCK_EXAMPLES)


def test_offline_builders_prepare_tfrecords_in_the_data_dir(data_dir):
  for name, sizes in (('kd_digits', (1437, 360)), ('mnist1d', (4000, 1000))):
    b = data.builder(name, data_dir)
    assert b.data_dir.startswith(data_dir) and b.is_prepared()
    assert any('.tfrecord' in f for f in os.listdir(b.data_dir))
    assert b.info.features['label'].num_classes == 10
    assert (data.num_examples(name, 'train', data_dir),
            data.num_examples(name, 'test', data_dir)) == sizes


def test_digits_split_is_stratified_80_20_and_normalised(digits):
  (x_tr, _), (x_te, y_te) = digits
  assert x_tr.shape == (1437, 8, 8, 1) and x_te.shape == (360, 8, 8, 1)
  counts = np.bincount(y_te, minlength=10)
  assert counts.min() >= 35 and counts.max() <= 37
  np.testing.assert_allclose(x_tr.mean(), 0.0, atol=1e-3)
  np.testing.assert_allclose(x_tr.std(), 1.0, atol=1e-3)


def test_digits_are_the_real_scikit_learn_images(digits):
  from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
  (x_tr, y_tr), _ = digits
  ref = load_digits()
  pixels = (x_tr[0, ..., 0] * 0.3760 + 0.3054) * 16
  match = [i for i in range(len(ref.images))
           if np.allclose(ref.images[i], pixels, atol=0.1)]
  assert match and ref.target[match[0]] == y_tr[0]


def test_mnist1d_has_its_published_sizes_and_classes(data_dir):
  x, y = data.load_split('mnist1d', 'train', data_dir)
  assert x.shape == (4000, 40, 1) and x.dtype == np.float32
  assert y.dtype == np.int32 and np.bincount(y).min() > 350
  np.testing.assert_allclose(x.mean(), 0.0, atol=1e-3)
  np.testing.assert_allclose(x.std(), 1.0, atol=1e-3)
  _, y_te = data.load_split('mnist1d', 'test', data_dir)
  assert len(y_te) == 1000 and np.bincount(y_te, minlength=10).min() > 80
  batch = next(data.example_batches('mnist1d', batch_size=32, seed=0,
                                  data_dir=data_dir))
  assert batch['image'].shape == (32, 40, 1)


def test_train_batches_are_deterministic_and_resume_exactly(data_dir):
  def take(n, **kw):
    it = data.example_batches('kd_digits', data_dir=data_dir,
                            **{'batch_size': 64, 'seed': 3, **kw})
    return [next(it) for _ in range(n)]
  a, b = take(50), take(50)
  other = take(1, seed=4)
  assert a[0]['image'].shape == (64, 8, 8, 1)
  assert a[0]['image'].dtype == np.float32 and a[0]['label'].dtype == np.int32
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x['image'], y['image'])
  # 22.45 batches an epoch: resume inside epoch 0, 1 and 2.
  for start in (7, 25, 45):
    for x, y in zip(a[start:], take(5, start_step=start)):
      np.testing.assert_array_equal(x['image'], y['image'])
      np.testing.assert_array_equal(x['label'], y['label'])
  assert not np.array_equal(a[0]['label'], other[0]['label'])
  # One batch an epoch: each is the whole split, in a new order.
  epochs = [e['label'] for e in take(2, batch_size=1437)]
  np.testing.assert_array_equal(np.sort(epochs[0]), np.sort(epochs[1]))
  assert not np.array_equal(epochs[0], epochs[1])


def test_streams_sharing_a_split_and_fetched_in_chunks_equal_lone_ones(
    data_dir, monkeypatch):
  """A vectorized group's streams share the decoded split and its tf.data
  cache (`_records`) and fetch several batches a call (`_unchunked`): each
  still yields the batches of a lone stream fetched one at a time."""
  from kd.data import input_pipeline  # pylint: disable=import-outside-toplevel

  def stream(seed, augment):
    return data.example_batches('kd_digits', data_dir=data_dir, batch_size=64,
                                seed=seed, augment=augment)

  kinds = [(3, True), (4, True), (3, False)]
  alone = []
  with monkeypatch.context() as m:
    m.setattr(input_pipeline, '_CHUNK_MAX', 1)
    for seed, augment in kinds:
      m.setattr(input_pipeline, '_SMALL_SPLITS', {})
      it = stream(seed, augment)
      alone.append([next(it) for _ in range(50)])  # 2.2 epochs.
  monkeypatch.setattr(input_pipeline, '_SMALL_SPLITS', {})
  streams = [stream(seed, augment) for seed, augment in kinds]
  together = [[next(it) for it in streams] for _ in range(50)]
  assert len(input_pipeline._SMALL_SPLITS) == 1  # pylint: disable=protected-access
  for r, batches in enumerate(alone):
    for step, batch in enumerate(batches):
      for key in ('image', 'label', 'index'):
        np.testing.assert_array_equal(together[step][r][key], batch[key])


def test_augmentation_is_per_example_and_keeps_shapes(data_dir, digits):
  plain = next(data.example_batches('kd_digits', batch_size=64, seed=0,
                                  augment=False, data_dir=data_dir))
  aug = next(data.example_batches('kd_digits', batch_size=64, seed=0,
                                data_dir=data_dir))
  np.testing.assert_array_equal(plain['label'], aug['label'])
  assert aug['image'].shape == plain['image'].shape
  assert not np.allclose(plain['image'], aug['image'])
  # Unaugmented training examples are the eval-preprocessed train split.
  (x_tr, _), _ = digits
  flat = x_tr.reshape(len(x_tr), -1)
  for x in plain['image'][:4]:
    assert (flat == x.reshape(-1)).all(-1).any()


def test_eval_batches_cover_every_example_once_with_a_mask(data_dir, digits):
  batches = list(data.eval_batches('kd_digits', batch_size=100,
                                   data_dir=data_dir))
  assert len(batches) == 4
  mask = np.concatenate([b['mask'] for b in batches])
  assert mask.dtype == np.float32
  assert mask.sum() == 360 and mask[:360].all() and not mask[360:].any()
  _, (x_te, y_te) = digits
  np.testing.assert_array_equal(
      np.concatenate([b['image'] for b in batches])[:360], x_te)
  np.testing.assert_array_equal(
      np.concatenate([b['label'] for b in batches])[:360], y_te)


def test_processes_read_disjoint_parts_that_cover_the_split(data_dir, digits):
  parts = []
  for i in range(2):
    batches = list(data.eval_batches('kd_digits', batch_size=64,
                                     data_dir=data_dir, process_index=i,
                                     process_count=2))
    assert len(batches) == 3  # Same count on every process.
    parts.append(np.concatenate([b['image'][b['mask'] > 0] for b in batches]))
  assert len(parts[0]) == len(parts[1]) == 180
  # In process order the parts are the split itself: disjoint and complete.
  np.testing.assert_array_equal(np.concatenate(parts), digits[1][0])


def test_slice_mode_batches_do_not_depend_on_the_process_count(data_dir):
  kw = dict(seed=1, start_step=3, data_dir=data_dir)
  one = data.example_batches('kd_digits', batch_size=64, **kw)
  two = [data.example_batches('kd_digits', batch_size=32, process_index=i,
                            process_count=2, process_split='slice', **kw)
         for i in range(2)]
  for _ in range(25):
    whole, parts = next(one), [next(it) for it in two]
    np.testing.assert_array_equal(
        whole['image'], np.concatenate([p['image'] for p in parts]))
    np.testing.assert_array_equal(
        whole['label'], np.concatenate([p['label'] for p in parts]))


@pytest.mark.parametrize('name,shape,classes', [
    ('mnist', (28, 28, 1), 10), ('cifar10', (32, 32, 3), 10),
    ('cifar100', (32, 32, 3), 100), ('imagenet2012', (64, 64, 3), 1000)])
def test_real_loaders_on_mock_data(mock_dir, name, shape, classes):
  image_size = 64 if name == 'imagenet2012' else None
  kw = dict(data_dir=mock_dir, image_size=image_size)
  with tfds.testing.mock_data(num_examples=_MOCK_EXAMPLES, data_dir=mock_dir):
    plain = next(data.example_batches(name, batch_size=8, seed=0, augment=False,
                                    **kw))
    aug = next(data.example_batches(name, batch_size=8, seed=0, augment=True,
                                  **kw))
    evals = list(data.eval_batches(name, batch_size=6,
                                   split=_MOCK_SPLITS[name][1], **kw))
  assert data.spec(name, image_size).num_classes == classes
  assert len(evals) == 3 and sum(b['mask'].sum() for b in evals) == 16
  for b in (plain, aug, *evals):
    assert b['image'].shape[1:] == shape and b['image'].dtype == np.float32
    assert b['label'].dtype == np.int32 and b['label'].max() < classes
    assert np.isfinite(b['image']).all()
  assert plain['image'].shape[0] == aug['image'].shape[0] == 8
  np.testing.assert_array_equal(plain['label'], aug['label'])
  if name == 'mnist':  # No augmentation.
    np.testing.assert_array_equal(plain['image'], aug['image'])
  else:
    assert not np.allclose(plain['image'], aug['image'])


def test_unprepared_dataset_says_how_to_prepare_it(tmp_path):
  empty = str(tmp_path)
  with pytest.raises(data.DatasetNotPreparedError) as err:
    data.example_batches('mnist', batch_size=8, seed=0, data_dir=empty)
  message = str(err.value)
  assert f"'mnist' is not prepared in {empty}" in message
  assert f'tfds build mnist --data_dir={empty}' in message
  assert '--config.data.data_dir' in message
  assert isinstance(err.value, RuntimeError)
  # Raised when the iterator is made, before any batch is asked for.
  with pytest.raises(data.DatasetNotPreparedError,
                     match=f'{empty}/downloads/manual'):
    data.eval_batches('imagenet2012', batch_size=8, split='validation',
                      data_dir=empty)
  assert not os.listdir(empty)  # Nothing was started, let alone downloaded.


def test_unknown_dataset_and_size_are_errors():
  with pytest.raises(ValueError, match='unknown dataset.*cifar100.*mnist1d'):
    data.spec('cifar1000')
  with pytest.raises(ValueError, match='imagenet2012 only'):
    data.spec('cifar10', image_size=64)
  assert data.spec('imagenet2012', 128).input_shape == (128, 128, 3)


def test_train_examples_carry_their_position_in_the_split():
  it = data.example_batches('kd_digits', batch_size=1437, seed=0, augment=False)
  batch = next(it)
  assert sorted(batch['index'].tolist()) == list(range(1437))
  x, y = data.load_split('kd_digits', 'train')
  np.testing.assert_array_equal(y[batch['index']], batch['label'])
  np.testing.assert_allclose(x[batch['index']], batch['image'], atol=1e-6)


def test_excluded_classes_never_appear_and_resume_still_exact(data_dir):
  kw = dict(batch_size=64, seed=0, data_dir=data_dir, augment=False,
            exclude_classes=(3,))
  it = data.example_batches('kd_digits', **kw)
  batches = [next(it) for _ in range(30)]  # Over an epoch of 1,437 - 147.
  assert not any((b['label'] == 3).any() for b in batches)
  resumed = data.example_batches('kd_digits', start_step=25, **kw)
  for b in batches[25:]:
    np.testing.assert_array_equal(next(resumed)['index'], b['index'])
