"""RepDistiller (the CRD benchmark code, HobbitLong/RepDistiller `models/`;
mdistiller's CIFAR-100 teachers are the same modules): renames from its
PyTorch module paths to kd's CIFAR zoo, per model family."""
from kd.convert.common import CONV_BN, Rules
from kd.models import vgg

DATA = 'cifar100'  # Classes and input size: kd.data's spec of it.

_RESNET = [(r'^layer(\d+)\.(\d+)\.', r'layer\1_\2/'),
           (r'/downsample\.0$', '/Conv_2'), (r'/downsample\.1$', '/BatchNorm_2'),
           *CONV_BN]

_RESNET50 = [(r'^layer(\d+)\.(\d+)\.', r'layer\1_\2/'),
             (r'/shortcut\.0$', '/Conv_3'), (r'/shortcut\.1$', '/BatchNorm_3'),
             *CONV_BN, (r'^linear$', 'fc')]

_WRN = [(r'^block(\d+)\.layer\.(\d+)\.', r'block\1_\2/'),
        (r'/convShortcut$', '/Conv_2'), *CONV_BN]

# `conv.{3k}` / `conv.{3k+1}` of a Sequential (conv, BN, ReLU)*: k-th pair.
_MOBILENET = [
    (r'^conv1\.0$', 'Conv_0'), (r'^conv1\.1$', 'BatchNorm_0'),
    (r'^conv2\.0$', 'Conv_1'), (r'^conv2\.1$', 'BatchNorm_1'),
    (r'^blocks\.(\d+)\.(\d+)\.conv\.(\d+)$',
     lambda m: f'group{m[1]}_{m[2]}/' + ('Conv', 'BatchNorm')[int(m[3]) % 3]
     + f'_{int(m[3]) // 3}'),
    (r'^classifier\.0$', 'fc')]

_SHUFFLE_V1 = [(r'^layer(\d+)\.(\d+)\.', r'block\1_\2/'), *CONV_BN,
               (r'^linear$', 'fc')]

# A stage is `[DownBlock, BasicBlock * n]`: kd's `down{s}`, `block{s}_{i}`.
_SHUFFLE_V2 = [(r'^layer(\d+)\.0\.', r'down\1/'),
               (r'^layer(\d+)\.(\d+)\.',
                lambda m: f'block{m[1]}_{int(m[2]) - 1}/'),
               *CONV_BN, (r'^linear$', 'fc')]


def _vgg(cfg) -> Rules:
  """`block{b}.{3j}` is kd's `conv{b}_{j}`, `block{b}.{3j+1}` the BN after
  it, numbered over the whole network in kd; `classifier` is `fc`."""
  first_bn = [sum(len(block) for block in cfg[:b]) for b in range(len(cfg))]

  def rename(m):
    b, k = int(m[1]), int(m[2])
    return (f'conv{b}_{k // 3}' if k % 3 == 0 else
            f'BatchNorm_{first_bn[b] + k // 3}')

  return [(r'^block(\d+)\.(\d+)$', rename), (r'^classifier$', 'fc')]


RULES: dict[str, Rules] = {
    **{f'resnet{d}': _RESNET for d in (8, 14, 20, 32, 44, 56, 110)},
    'resnet8x4': _RESNET, 'resnet32x4': _RESNET,
    **{f'wrn_{d}_{w}': _WRN for d in (16, 40) for w in (1, 2)},
    **{name: _vgg(cfg) for name, cfg in vgg.CFGS.items()},
    'MobileNetV2': _MOBILENET,
    'ShuffleV1': _SHUFFLE_V1,
    'ShuffleV2': _SHUFFLE_V2,
    'ResNet50': _RESNET50,
}
ALIASES = {'mobile_half': 'MobileNetV2'}  # RepDistiller's function name.
