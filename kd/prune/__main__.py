"""python -m kd.prune --workdir=TEACHER_RUN --out=RUN [--width=heads:0.5,mlp:0.5,embed:0.75
    | --width=channels:0.5,dense:0.5,by:activation|l1]
    [--depth=keep:2,by:cosine|loss] [--calibration_batches=16] [--calibration_data=NAME]"""
import argparse
import json
import sys

from absl import logging

from kd import main as kd_main
from kd import prune
from kd.prune import run as prune_run


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m kd.prune', description=prune.__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--workdir', required=True,
                      help='the finished run to prune (a teacher)')
  parser.add_argument('--out', required=True,
                      help='the run directory to write (init_from reads it)')
  parser.add_argument('--width', default='',
                      help='units kept, as fractions or sizes: heads, mlp, '
                      'embed (transformer_lm, e.g. heads:0.5,mlp:0.5,embed:96)'
                      '; channels, conv<i>, dense and by:activation|l1 (cnn, '
                      'cnn1d, e.g. channels:0.5,dense:0.5,by:l1)')
  parser.add_argument('--depth', default='',
                      help='layers kept and how they are ranked, e.g. '
                      'keep:2,by:cosine (or by:loss)')
  parser.add_argument('--calibration_batches', type=int, default=16,
                      help='training batches the importance is scored on')
  parser.add_argument('--calibration_data', default='',
                      help="a dataset in the model's tokens to score on "
                      "(default: the run's own)")
  args = parser.parse_args(argv)
  if not args.width and not args.depth:
    parser.error('give --width, --depth or both: nothing would be pruned')
  logging.set_verbosity(logging.WARNING)

  def go(_):
    try:
      config = prune_run.run_config(args.workdir, args.width, args.depth,
                                    args.calibration_batches,
                                    args.calibration_data)
    except (ValueError, FileNotFoundError) as e:
      print(f'[kd.prune] error: {e}', file=sys.stderr)
      raise SystemExit(1) from None
    summary = prune_run.run(config, args.out)
    print(json.dumps(summary, indent=2, sort_keys=True))
    print(f'a student starts from it with --config.init_from={args.out} and '
          f'model.kwargs {dict(config.model.kwargs)}')

  try:
    kd_main.one_line_errors(go, 'kd.prune')(None)
  except SystemExit as e:
    return int(e.code or 0)
  return 0


if __name__ == '__main__':
  sys.exit(main())
