"""The benchmark model zoo, parameter for parameter (no compilation: the
counts come from jax.eval_shape)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd import models
from kd.models import vgg

# Parameter counts with 100 classes, published in the CRD benchmark's tables
# (STACK notes / RepDistiller); every model is also counted by hand below.
PUBLISHED = {'resnet8x4': 1_233_540, 'resnet32x4': 7_433_860,
             'wrn_40_2': 2_255_156, 'wrn_16_2': 703_284}
BN = 2  # Scale and bias per channel; running statistics are not params.


def _cifar_resnet_by_hand(depth, widths=(16, 16, 32, 64), classes=100):
  """3x3 stem + BN; per stage n basic blocks (two 3x3 conv + BN, a 1x1
  conv + BN shortcut where the width or stride changes); linear head."""
  n = (depth - 2) // 6
  total, c_in = 27 * widths[0] + BN * widths[0], widths[0]
  for stage, c in enumerate(widths[1:]):
    for i in range(n):
      total += 9 * c_in * c + BN * c + 9 * c * c + BN * c
      if c_in != c or (stage > 0 and i == 0):
        total += c_in * c + BN * c
      c_in = c
  return total + c_in * classes + classes


def _wrn_by_hand(depth, widen, classes=100):
  """3x3 stem (no BN); pre-activation blocks (BN, 3x3 conv, BN, 3x3 conv,
  a 1x1 conv shortcut where the width changes); final BN; linear head."""
  n = (depth - 4) // 6
  total, c_in = 27 * 16, 16
  for c in (16 * widen, 32 * widen, 64 * widen):
    for _ in range(n):
      total += BN * c_in + 9 * c_in * c + BN * c + 9 * c * c
      total += c_in * c if c_in != c else 0
      c_in = c
  return total + BN * c_in + c_in * classes + classes


def _vgg_by_hand(cfg, classes=100):
  """3x3 convolutions with bias, each followed by BN; linear head."""
  total, c_in = 0, 3
  for block in cfg:
    for c in block:
      total += 9 * c_in * c + c + BN * c
      c_in = c
  return total + c_in * classes + classes


CIFAR100 = {f'resnet{d}': _cifar_resnet_by_hand(d)
            for d in (8, 14, 20, 32, 44, 56, 110)}
CIFAR100.update({f'resnet{d}x4': _cifar_resnet_by_hand(d, (32, 64, 128, 256))
                 for d in (8, 32)})
CIFAR100.update({f'wrn_{d}_{k}': _wrn_by_hand(d, k)
                 for d in (16, 40) for k in (1, 2)})
CIFAR100.update({name: _vgg_by_hand(cfg) for name, cfg in vgg.CFGS.items()})


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
# Published: torchvision's ImageNet models; MobileNetV1 (Howard et al. 2017).
IMAGENET = {'resnet18_imagenet': 11_689_512, 'resnet34_imagenet': 21_797_672,
            'resnet50_imagenet': 25_557_032, 'mobilenet_v1_imagenet': 4_231_976}
# The CRD ResNet50 is torchvision's with a 3x3 stem and 100 classes.
CIFAR100['ResNet50'] = (IMAGENET['resnet50_imagenet'] - 7 * 7 * 3 * 64
                        + 3 * 3 * 3 * 64 - (2048 * 1000 + 1000)
                        + (2048 * 100 + 100))  # 23,705,252; CRD: 23.71M.


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


@pytest.mark.parametrize('name', sorted(PUBLISHED))
def test_hand_counts_agree_with_the_published_ones(name):
  assert CIFAR100[name] == PUBLISHED[name]


@pytest.mark.parametrize('name,stages', [('resnet8', 4), ('wrn_16_1', 4),
                                         ('vgg8', 5), ('MobileNetV2', 5),
                                         ('ShuffleV2', 4)])
def test_forward_pass_and_feature_taps(name, stages):
  m = models.create(name, 100)
  x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)

  @jax.jit  # One program: run op by op, a deep model compiles hundreds.
  def forward(x):
    variables = m.init(jax.random.key(0), x)
    return variables, m.apply(variables, x, train=True,
                              mutable=['batch_stats']), m.apply(
                                  variables, x, train=False)

  variables, ((logits, feats), updates), (eval_logits, _) = forward(x)
  assert logits.shape == (2, 100) and logits.dtype == jnp.float32
  assert [f'stage{i}' in feats for i in range(stages)] == [True] * stages
  assert feats['embedding'].ndim == 2
  if name not in ('MobileNetV2', 'ShuffleV2'):  # These widen before pooling.
    assert feats[f'stage{stages - 1}'].shape[-1] == feats['embedding'].shape[-1]
  assert 'batch_stats' in updates and 'batch_stats' in variables
  assert eval_logits.shape == (2, 100)


def test_unknown_model_lists_the_zoo():
  with pytest.raises(ValueError, match='unknown model.*resnet32x4.*wrn_40_2'):
    models.create('resnet33', 100)
