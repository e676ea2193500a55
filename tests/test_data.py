"""Input pipelines: the offline builders and the real loaders on mock data."""
import numpy as np
import pytest
import tensorflow_datasets as tfds

from kd import data


@pytest.fixture(scope='module')
def digits():
  return data.load_split('kd_digits', 'train'), data.load_split('kd_digits',
                                                                'test')


def test_digits_split_is_stratified_80_20(digits):
  (x_tr, y_tr), (x_te, y_te) = digits
  assert x_tr.shape == (1437, 8, 8, 1) and x_te.shape == (360, 8, 8, 1)
  counts = np.bincount(y_te, minlength=10)
  assert counts.min() >= 35 and counts.max() <= 37
  np.testing.assert_allclose(x_tr.mean(), 0.0, atol=1e-3)
  np.testing.assert_allclose(x_tr.std(), 1.0, atol=1e-3)


def test_digits_are_the_real_scikit_learn_images(digits):
  from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
  (x_tr, y_tr), _ = digits
  ref = load_digits()
  pixels = np.round(x_tr[0, ..., 0] * 0.3760 + 0.3054, 3) * 16
  match = [i for i in range(len(ref.images))
           if np.allclose(ref.images[i], pixels, atol=0.1)]
  assert match and ref.target[match[0]] == y_tr[0]


def test_mnist1d_has_its_published_sizes():
  x, y = data.load_split('mnist1d', 'train')
  assert x.shape == (4000, 40, 1) and y.shape == (4000,)
  assert data.num_examples('mnist1d', 'test') == 1000
  assert np.bincount(y).min() > 350


def test_train_batches_are_deterministic_and_resume_exactly():
  def take(it, n):
    return [next(it) for _ in range(n)]
  a = take(data.train_batches('kd_digits', batch_size=64, seed=3), 30)
  b = take(data.train_batches('kd_digits', batch_size=64, seed=3), 30)
  c = take(data.train_batches('kd_digits', batch_size=64, seed=3,
                              start_step=25), 5)
  other = take(data.train_batches('kd_digits', batch_size=64, seed=4), 1)
  assert a[0]['image'].shape == (64, 8, 8, 1) and a[0]['image'].dtype == np.float32
  assert a[0]['label'].dtype == np.int32
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x['image'], y['image'])
  for x, y in zip(a[25:], c):  # Crosses an epoch boundary (22.4 per epoch).
    np.testing.assert_array_equal(x['image'], y['image'])
    np.testing.assert_array_equal(x['label'], y['label'])
  assert not np.array_equal(a[0]['label'], other[0]['label'])


def test_eval_batches_cover_every_example_once_with_a_mask():
  batches = list(data.eval_batches('kd_digits', batch_size=100))
  assert len(batches) == 4
  mask = np.concatenate([b['mask'] for b in batches])
  assert mask.sum() == 360 and mask[:360].all() and not mask[360:].any()
  labels = np.concatenate([b['label'] for b in batches])[:360]
  np.testing.assert_array_equal(labels, data.load_split('kd_digits', 'test')[1])


def test_processes_read_disjoint_parts_that_cover_the_split():
  parts = []
  for i in range(2):
    batches = list(data.eval_batches('kd_digits', batch_size=64,
                                     process_index=i, process_count=2))
    assert len(batches) == 3  # Same count on every process.
    parts.append(np.concatenate([b['image'][b['mask'] > 0] for b in batches]))
  assert len(parts[0]) + len(parts[1]) == 360
  flat = [p.reshape(len(p), -1) for p in parts]
  overlap = (flat[0][:, None, :] == flat[1][None, :, :]).all(-1).any()
  assert not overlap


@pytest.mark.parametrize('name,shape,classes', [
    ('mnist', (28, 28, 1), 10), ('cifar10', (32, 32, 3), 10),
    ('cifar100', (32, 32, 3), 100), ('imagenet2012', (64, 64, 3), 1000)])
def test_real_loaders_on_mock_data(name, shape, classes):
  with tfds.testing.mock_data(num_examples=16):
    kw = dict(image_size=64 if name == 'imagenet2012' else None, download=True)
    plain = next(data.train_batches(name, batch_size=8, seed=0, augment=False,
                                    **kw))
    aug = next(data.train_batches(name, batch_size=8, seed=0, augment=True,
                                  **kw))
    ev = next(data.eval_batches(name, batch_size=8,
                                split='validation' if name == 'imagenet2012'
                                else 'test', **kw))
  assert data.spec(name, kw['image_size']).num_classes == classes
  for b in (plain, aug, ev):
    assert b['image'].shape == (8, *shape) and b['image'].dtype == np.float32
    assert b['label'].dtype == np.int32 and b['label'].max() < classes
    assert np.isfinite(b['image']).all()
  if name != 'mnist':  # mnist has no augmentation.
    assert not np.allclose(plain['image'], aug['image'])
  else:
    np.testing.assert_array_equal(plain['image'], aug['image'])


def test_unprepared_dataset_says_how_to_prepare_it(tmp_path):
  with pytest.raises(data.DatasetNotPreparedError,
                     match=r"'cifar100' is not prepared.*tfds build cifar100"):
    data.train_batches('cifar100', batch_size=8, seed=0, data_dir=str(tmp_path))
  with pytest.raises(data.DatasetNotPreparedError, match='downloads/manual'):
    data.eval_batches('imagenet2012', batch_size=8, data_dir=str(tmp_path)
                      ).__next__()


def test_unknown_dataset_lists_the_valid_ones():
  with pytest.raises(ValueError, match='unknown dataset.*cifar100.*mnist1d'):
    data.spec('cifar1000')


def test_slice_mode_batches_do_not_depend_on_the_process_count():
  one = data.train_batches('kd_digits', batch_size=64, seed=1, start_step=3)
  two = [data.train_batches('kd_digits', batch_size=32, seed=1, start_step=3,
                            process_index=i, process_count=2,
                            process_split='slice') for i in range(2)]
  for _ in range(25):
    whole, parts = next(one), [next(it) for it in two]
    np.testing.assert_array_equal(
        whole['image'], np.concatenate([p['image'] for p in parts]))
    np.testing.assert_array_equal(
        whole['label'], np.concatenate([p['label'] for p in parts]))
