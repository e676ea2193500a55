"""The benchmark model zoo, parameter for parameter (no compilation: the
counts come from jax.eval_shape)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd import models

# 100 classes. Published (STACK notes / RepDistiller): resnet8x4, resnet32x4,
# wrn_40_2, wrn_16_2. The others are the reference definitions' counts
# (RepDistiller's models, rounded in its tables: resnet56 0.86M, resnet110
# 1.7M, vgg13 9.46M, vgg8 3.96M), checked by hand from their layer shapes.
CIFAR100 = {
    'resnet8': 83_892, 'resnet20': 278_324, 'resnet56': 861_620,
    'resnet110': 1_736_564, 'resnet8x4': 1_233_540, 'resnet32x4': 7_433_860,
    'wrn_16_1': 180_916, 'wrn_16_2': 703_284, 'wrn_40_1': 569_780,
    'wrn_40_2': 2_255_156, 'vgg8': 3_965_028, 'vgg13': 9_462_180,
}


def _mobilenet_v2_by_hand(t=6, width=0.5, classes=100):
  """From the reference layer list: stem, inverted residuals (1x1 expand,
  3x3 depthwise, 1x1 project, each with BN), 1x1 conv to 1280, linear."""
  setting = ((1, 16, 1), (t, 24, 2), (t, 32, 3), (t, 64, 4), (t, 96, 3),
             (t, 160, 3), (t, 320, 1))
  c_in = int(32 * width)
  total = 27 * c_in + 2 * c_in
  for e, c, n in setting:
    c_out = int(c * width)
    for _ in range(n):
      hid = c_in * e
      total += c_in * hid + 2 * hid + 9 * hid + 2 * hid + hid * c_out + 2 * c_out
      c_in = c_out
  return total + c_in * 1280 + 2 * 1280 + 1280 * classes + classes


def _shufflenet_v2_by_hand(classes=100):
  """Stem 1x1 (24), per stage a down block (two branches) and basic blocks
  on half the channels, 1x1 conv to 1024, linear."""
  total, c_in = 3 * 24 + 48, 24
  for c_out, n in ((116, 3), (232, 7), (464, 3)):
    mid = c_out // 2
    total += (9 * c_in + 2 * c_in + c_in * mid + 2 * mid +  # Left branch.
              c_in * mid + 2 * mid + 9 * mid + 2 * mid + mid * mid + 2 * mid)
    total += n * (2 * mid * mid + 9 * mid + 6 * mid)
    c_in = c_out
  return total + c_in * 1024 + 2 * 1024 + 1024 * classes + classes


def _shufflenet_v1_by_hand(classes=100):
  """Units of grouped 1x1 (groups 1 right after the stem), 3x3 depthwise,
  grouped 1x1 (groups 3), BN after each; stride-2 units add width - input."""
  total, c_in = 3 * 24 + 48, 24
  for width, n in ((240, 4), (480, 8), (960, 4)):
    for i in range(n):
      out = width - c_in if i == 0 else width
      mid, g1 = out // 4, 1 if c_in == 24 else 3
      total += (c_in * mid // g1 + 2 * mid + 9 * mid + 2 * mid +
                mid * out // 3 + 2 * out)
      c_in = width
  return total + 960 * classes + classes


CIFAR100['ShuffleV1'] = _shufflenet_v1_by_hand()  # 949,258; CRD: 0.95M.
CIFAR100['MobileNetV2'] = _mobilenet_v2_by_hand()  # 812,836; CRD: 0.81M.
CIFAR100['ShuffleV2'] = _shufflenet_v2_by_hand()  # 1,355,528; CRD: 1.35M.
# torchvision's resnet50 with a 3x3 stem and 100 classes:
# 25,557,032 - 9,408 + 1,728 - 2,049,000 + 204,900; CRD: 23.71M.
CIFAR100['ResNet50'] = 23_705_252

IMAGENET = {'resnet18_imagenet': 11_689_512, 'resnet34_imagenet': 21_797_672,
            'resnet50_imagenet': 25_557_032,  # torchvision.
            'mobilenet_v1_imagenet': 4_231_976}  # Howard et al. 2017.


def _count(name, classes, size):
  m = models.create(name, classes)
  v = jax.eval_shape(lambda: m.init(jax.random.key(0),
                                    jnp.zeros((1, size, size, 3))))
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(v['params'])), v


@pytest.mark.parametrize('name', sorted(CIFAR100))
def test_cifar100_parameter_counts(name):
  count, variables = _count(name, 100, 32)
  assert count == CIFAR100[name]
  assert 'batch_stats' in variables  # Running statistics are not params.


@pytest.mark.parametrize('name', sorted(IMAGENET))
def test_imagenet_parameter_counts(name):
  assert _count(name, 1000, 224)[0] == IMAGENET[name]


def test_resnet_depth_formula_and_hand_count():
  # resnet8x4 by hand: stem 864+64, stage1 57,728, stage2 230,144,
  # stage3 919,040, fc 25,700.
  assert 864 + 64 + 57_728 + 230_144 + 919_040 + 25_700 == CIFAR100['resnet8x4']


@pytest.mark.parametrize('name,stages', [('resnet8', 4), ('wrn_16_1', 4),
                                         ('vgg8', 5), ('MobileNetV2', 5),
                                         ('ShuffleV2', 4)])
def test_forward_pass_and_feature_taps(name, stages):
  m = models.create(name, 100)
  x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
  variables = m.init(jax.random.key(0), x)
  (logits, feats), updates = m.apply(variables, x, train=True,
                                     mutable=['batch_stats'])
  assert logits.shape == (2, 100) and logits.dtype == jnp.float32
  assert [f'stage{i}' in feats for i in range(stages)] == [True] * stages
  assert feats['embedding'].ndim == 2
  if name not in ('MobileNetV2', 'ShuffleV2'):  # These widen before pooling.
    assert feats[f'stage{stages - 1}'].shape[-1] == feats['embedding'].shape[-1]
  assert 'batch_stats' in updates
  eval_logits, _ = m.apply(variables, x, train=False)
  assert eval_logits.shape == (2, 100)


def test_unknown_model_lists_the_zoo():
  with pytest.raises(ValueError, match='unknown model.*resnet32x4.*wrn_40_2'):
    models.create('resnet33', 100)
