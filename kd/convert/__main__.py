"""python -m kd.convert --from=repdistiller|torchvision --model=NAME CKPT --out=RUN_DIR"""
import argparse
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
  args = parser.parse_args(argv)
  try:
    summary = convert.convert(args.source, args.model, args.ckpt, args.out)
  except (common.MismatchError, ImportError, ValueError,
          FileExistsError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(f'wrote {args.out}: {summary["model"]} from {summary["source"]} '
        f'{summary["source_file"]} (sha256 {summary["source_sha256"][:12]})')
  return 0


if __name__ == '__main__':
  sys.exit(main())
