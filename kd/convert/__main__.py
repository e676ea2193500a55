"""python -m kd.convert --from=repdistiller|timm|torchvision --model=NAME CKPT --out=RUN_DIR
python -m kd.convert --from=hf HF_DIR --out=RUN_DIR [--dtype=float32]
python -m kd.convert --from=hf --describe HF_DIR [--student_params=30M]"""
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
                      choices=sorted(convert.SOURCES) + ['hf'])
  parser.add_argument('--model',
                      help="kd's model name (or the source's own); not for "
                      "--from=hf (config.json says)")
  parser.add_argument('ckpt', help='.pth/.pt, .safetensors or .npz; for '
                      '--from=hf the Hugging Face model folder')
  parser.add_argument('--out', help='run directory to write')
  parser.add_argument('--dtype', default='float32',
                      help='--from=hf: dtype the weights are stored at '
                      '(float32, bfloat16 or float16)')
  parser.add_argument('--describe', action='store_true',
                      help='--from=hf: print the kd model, its parameter '
                      'count and memory from config.json alone')
  parser.add_argument('--student_params',
                      help='--describe: also the memory of this teacher '
                      'with a student of this many parameters (e.g. 30M), '
                      "or of a model of the teacher's kind with these "
                      'kwargs (JSON)')
  parser.add_argument('--data', help="kd's dataset the model is for (default: "
                      "the source's, cifar100 or imagenet2012)")
  parser.add_argument('--image_size', type=int, default=0,
                      help="ImageNet's input size, where not 224")
  parser.add_argument('--kwargs', default='{}',
                      help='the model\'s arguments as JSON, e.g. '
                      '\'{"patch_size": 4, "depth": 6}\'')
  args = parser.parse_args(argv)
  if args.source == 'hf':
    return _hf(parser, args)
  if not args.model or not args.out:
    parser.error(f'--from={args.source} needs --model and --out')
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


def _hf(parser, args) -> int:
  from kd.convert import hf  # pylint: disable=import-outside-toplevel
  if args.model:
    parser.error('--from=hf takes no --model: the folder\'s config.json '
                 'names the model')
  if not args.describe and not args.out:
    parser.error('--from=hf needs --out=RUN_DIR (or --describe)')
  if args.student_params and not args.describe:
    parser.error('--student_params goes with --describe')
  try:
    if args.describe:
      print(hf.describe(args.ckpt, args.student_params))
      return 0

    def progress(done, total):
      if done == total or done % max(1, total // 20) == 0:
        print(f'  {done}/{total} tensors', file=sys.stderr, flush=True)

    summary = hf.convert(args.ckpt, args.out, dtype=args.dtype,
                         progress=progress)
  except (ValueError, OSError) as e:  # Bad input, unreadable or exists.
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(f'wrote {args.out}: {summary["model"]} ({summary["parameters"]:,} '
        f'parameters, {summary["dtype"]}) from {summary["hf_model_type"]} '
        f'{args.ckpt} (sha256 {summary["source_sha256"][:12]})')
  return 0


if __name__ == '__main__':
  sys.exit(main())
