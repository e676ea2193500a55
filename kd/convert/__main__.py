"""python -m kd.convert --from=repdistiller|timm|torchvision --model=NAME CKPT --out=RUN_DIR"""
import argparse
import json
import sys

from kd import convert
from kd.convert import common


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m kd.convert', description=convert.__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--from', dest='source', required=True,
                      choices=sorted(convert.SOURCES))
  parser.add_argument('--model', required=True,
                      help="kd's model name (or the source's own)")
  parser.add_argument('ckpt', help='.pth/.pt, .safetensors or .npz')
  parser.add_argument('--out', required=True, help='run directory to write')
  parser.add_argument('--data', help="kd's dataset the model is for (default: "
                      "the source's, cifar100 or imagenet2012)")
  parser.add_argument('--image_size', type=int, default=0,
                      help="ImageNet's input size, where not 224")
  parser.add_argument('--kwargs', default='{}',
                      help='the model\'s arguments as JSON, e.g. '
                      '\'{"patch_size": 4, "depth": 6}\'')
  args = parser.parse_args(argv)
  try:
    kwargs = json.loads(args.kwargs)
    if not isinstance(kwargs, dict):
      raise ValueError('not an object')
  except ValueError as e:
    print(f'error: --kwargs={args.kwargs!r} is not a JSON object of the '
          f'model\'s arguments ({e}); e.g. --kwargs=\'{{"depth": 6}}\'',
          file=sys.stderr)
    return 1
  try:
    summary = convert.convert(args.source, args.model, args.ckpt, args.out,
                              data=args.data, image_size=args.image_size,
                              kwargs=kwargs)
  except (common.MismatchError, ImportError, ValueError, TypeError,
          FileExistsError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(f'wrote {args.out}: {summary["model"]} from {summary["source"]} '
        f'{summary["source_file"]} (sha256 {summary["source_sha256"][:12]})')
  return 0


if __name__ == '__main__':
  sys.exit(main())
