"""Offline TFDS builders for data that an installed package carries.

Nothing is downloaded: `download_and_prepare()` works without a network.
"""
import numpy as np
import tensorflow_datasets as tfds


class KdDigits(tfds.core.GeneratorBasedBuilder):
  """scikit-learn's handwritten digits (UCI), 1797 images of 8x8 pixels.

  A fixed, seeded, stratified 80/20 split: 1437 train / 360 test. Pixel values
  0..16 are stored as uint8 round(v * 255 / 16).
  """
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(8, 8, 1)),
            'label': tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://scikit-learn.org/stable/datasets/toy_dataset.html')

  def _split_generators(self, dl_manager):
    del dl_manager
    from sklearn import datasets, model_selection  # pylint: disable=import-outside-toplevel
    digits = datasets.load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
    x_tr, x_te, y_tr, y_te = model_selection.train_test_split(
        images, digits.target, test_size=0.2, stratify=digits.target,
        random_state=0)
    return {'train': self._generate_examples(x_tr, y_tr),
            'test': self._generate_examples(x_te, y_te)}

  def _generate_examples(self, images, labels):
    for i, (x, y) in enumerate(zip(images, labels)):
      yield i, {'image': x, 'label': int(y)}


class Mnist1d(tfds.core.GeneratorBasedBuilder):
  """MNIST-1D (Greydanus 2020): 4000 train / 1000 test signals of length 40.

  Generated locally by the `mnist1d` package with its default arguments
  (seed 42).
  """
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'signal': tfds.features.Tensor(shape=(40, 1), dtype=np.float32),
            'label': tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=('signal', 'label'),
        homepage='https://github.com/greydanus/mnist1d')

  def _split_generators(self, dl_manager):
    del dl_manager
    from mnist1d import data as m1d  # pylint: disable=import-outside-toplevel
    # make_dataset generates from the packaged templates; get_dataset would
    # try to download a pickle.
    d = m1d.make_dataset(m1d.get_dataset_args())
    return {'train': self._generate_examples(d['x'], d['y']),
            'test': self._generate_examples(d['x_test'], d['y_test'])}

  def _generate_examples(self, signals, labels):
    for i, (x, y) in enumerate(zip(signals, labels)):
      yield i, {'signal': np.asarray(x, np.float32)[:, None], 'label': int(y)}
