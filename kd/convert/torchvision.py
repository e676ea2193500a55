"""torchvision's ImageNet ResNets (`torchvision.models.resnet18/34/50`;
mdistiller's ImageNet teachers): renames to kd's `resnet*_imagenet`."""
from kd.convert.common import CONV_BN, Rules

DATA = 'imagenet2012'  # Classes and input size: kd.data's spec of it.


def _resnet(convs_per_block: int) -> Rules:
  """The shortcut (`downsample.0/1`) comes after a block's own
  convolutions, so kd numbers it next."""
  n = convs_per_block
  return [(r'^layer(\d+)\.(\d+)\.', r'layer\1_\2/'),
          (r'/downsample\.0$', f'/Conv_{n}'),
          (r'/downsample\.1$', f'/BatchNorm_{n}'), *CONV_BN]


RULES: dict[str, Rules] = {
    'resnet18_imagenet': _resnet(2),
    'resnet34_imagenet': _resnet(2),
    'resnet50_imagenet': _resnet(3),
}
ALIASES = {'resnet18': 'resnet18_imagenet', 'resnet34': 'resnet34_imagenet',
           'resnet50': 'resnet50_imagenet'}
